"""Request dependencies: who is calling (authentication) and may they (the permission table)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypedDict
from uuid import UUID

from fastapi import Depends, Query, Request

from gpufleet.api.state import app_state
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import MetricAgg, MetricBucket
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Forbidden, RateLimited, Unauthorized
from gpufleet.limits import DEFAULT_PAGE, MAX_CURSOR_CHARS, MAX_PAGE
from gpufleet.permissions import PERMISSIONS, allowed
from gpufleet.schemas.common import Timestamp
from gpufleet.services.auth import Principal

ORG_HEADER = "x-gpufleet-organization"

# Operations a signed-in user may perform before belonging to any organization.
_WITHOUT_ORG = frozenset({"me.read", "orgs.list", "orgs.create"})


async def get_db(request: Request) -> Database:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request."""
    return app_state(request).db


async def current_principal(request: Request) -> Principal:
    state = app_state(request)
    auth = state.authenticator
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <API key>'")
    if token.startswith("gfk_"):
        principal = await auth.api_key(token)
    elif auth.jwt_enabled and token.count(".") == 2:
        hint = request.headers.get(ORG_HEADER)
        try:
            org_hint = UUID(hint) if hint else None
        except ValueError as exc:
            raise Unauthorized(f"{ORG_HEADER} must be an organization id") from exc
        principal = await auth.bearer_jwt(token, org_hint)
    else:
        raise Unauthorized("unrecognised credential: expected an API key (gfk_...)")
    settings = state.settings
    if settings.rate_limit_key_per_minute and principal.key_id is not None:
        d = state.limiter.hit(f"key:{principal.key_id}", settings.rate_limit_key_per_minute)
        request.scope["state"]["ratelimit_headers"] = [
            (b"ratelimit-limit", str(d.limit).encode()),
            (b"ratelimit-remaining", str(d.remaining).encode()),
            (b"ratelimit-reset", str(d.reset_s).encode()),
        ]
        if not d.allowed:
            raise RateLimited("rate limit for this API key exceeded", retry_after=d.reset_s)
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


async def optional_principal(request: Request) -> Principal | None:
    """For routes open to anyone that act differently for a signed-in caller: no credential is
    None; a credential that does not verify is still a 401, never an anonymous call."""
    if "authorization" not in request.headers:
        return None
    return await current_principal(request)


MaybeCaller = Annotated[Principal | None, Depends(optional_principal)]


async def tenant(p: Caller) -> TenantContext:
    """The caller as a tenant-scoped service takes it: organization, user, actor and role, built
    here once per request (FastAPI shares the principal with ``requires``' check)."""
    return TenantContext.of_user(p.require_org(), p.user_id, p.role)


Tenant = Annotated[TenantContext, Depends(tenant)]
DB = Annotated[Database, Depends(get_db)]


def requires(action: str, responses: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Route keyword arguments that enforce ``action`` from the permission table."""
    if action not in PERMISSIONS:
        raise KeyError(f"{action!r} is not in the permission table")

    async def check(p: Caller) -> None:
        if p.org_id is None and action not in _WITHOUT_ORG:
            raise Unauthorized(f"this credential is not tied to an organization; send {ORG_HEADER}")
        if not allowed(p.role, action):
            raise Forbidden(f"{action} needs the {PERMISSIONS[action]} role or higher; this credential is {p.role}")

    return {
        "dependencies": [Depends(check)],
        "openapi_extra": {"x-permission": action, "x-min-role": PERMISSIONS[action].value},
        "responses": {
            401: {"description": "missing, invalid, expired or revoked credentials"},
            403: {"description": f"needs the {PERMISSIONS[action]} role"},
            **(responses or {}),
        },
    }


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size (max {MAX_PAGE}).")]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page.")]
DEFAULT_LIMIT = DEFAULT_PAGE


def forget_credentials(request: Request) -> None:
    """After a change to who may do what (a key or host revoked, a role changed, a host
    re-registered), drop this replica's cached credentials, API keys and host credentials, at once."""
    state = app_state(request)
    state.authenticator.invalidate()
    state.host_authenticator.forget_all()


NOT_FOUND: dict[int, dict[str, Any]] = {404: {"description": "no such object in this organization"}}
BAD_WINDOW: dict[int, dict[str, Any]] = {422: {"description": "bad range, or too many points"}}
ModelPart = Annotated[
    str | None,
    Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="Part of the model name, any case."),
]
WindowStart = Annotated[Timestamp | None, Query(description="Inclusive, with a time zone; default: end - 1 hour.")]
WindowEnd = Annotated[Timestamp | None, Query(description="Exclusive, with a time zone; default: now.")]


class MetricRead(TypedDict):
    """What every metrics read takes: its window [start, end), bucket and aggregate, and what bounds
    it, from the settings: the raw samples kept, the points answered."""

    start: datetime
    end: datetime
    bucket: MetricBucket
    agg: MetricAgg
    raw_retention_days: int
    max_points: int


def metric_read(
    request: Request, start: datetime | None, end: datetime | None, bucket: MetricBucket, agg: MetricAgg
) -> MetricRead:
    """The window is the last hour by default (``start`` and ``end`` are timezone-aware ``Timestamp``s)."""
    settings = app_state(request).settings
    end = end or datetime.now(UTC)
    return MetricRead(
        start=start or end - timedelta(hours=1),
        end=end,
        bucket=bucket,
        agg=agg,
        raw_retention_days=settings.metrics_retention_days,
        max_points=settings.metrics_max_points,
    )
