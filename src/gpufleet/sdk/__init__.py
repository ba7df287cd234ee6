"""The Python SDK: ``Client`` (sync) and ``AsyncClient``, typed errors; docs/sdk.md.

``Client()`` with no arguments talks to the server the CLI talks to (GPUFLEET_URL,
GPUFLEET_API_KEY, else the CLI's config file). The CLI goes through this package too.
"""

from gpufleet.domain.tenancy import Role
from gpufleet.sdk.aio import AsyncClient
from gpufleet.sdk.client import Client
from gpufleet.sdk.errors import (
    BadRequest,
    BudgetExceeded,
    Conflict,
    Forbidden,
    GpufleetError,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    StaleAttempt,
    Unauthorized,
    ValidationFailed,
)

ApiError = GpufleetError  # the base class's earlier name

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "BudgetExceeded",
    "Client",
    "Conflict",
    "Forbidden",
    "GpufleetError",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Role",
    "ServerError",
    "ServiceUnavailable",
    "StaleAttempt",
    "Unauthorized",
    "ValidationFailed",
]
