"""Typed SDK errors: one class per kind of problem+json answer, all under ``GpufleetError``.

    try:
        gf.get_job(job_id)
    except NotFound:
        ...
    except GpufleetError as exc:  # any other answer the server refused
        print(exc.status, exc.title, exc.detail)

The class is chosen by HTTP status, then refined by the problem's title where one status has
several meanings (409: a conflict, an invalid state transition, a stale attempt).
"""

from __future__ import annotations

from typing import Any

import httpx


class GpufleetError(Exception):
    """An error answer from the server, as its problem+json said it (or a transport failure, status 0)."""

    def __init__(self, status: int, title: str, detail: str | None, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body or {}


class BadRequest(GpufleetError):
    """400."""


class Unauthorized(GpufleetError):
    """401: no key, or a wrong, expired or revoked one."""


class BudgetExceeded(GpufleetError):
    """402: a hard budget has no room for this work; ``body`` has budget, spent, remaining and estimate."""


class Forbidden(GpufleetError):
    """403: the key's role may not do this."""


class NotFound(GpufleetError):
    """404: no such object in this organization (another organization's objects are 404 too)."""


class Conflict(GpufleetError):
    """409: the object's state forbids this now (e.g. cancelling a finished job)."""


class InvalidTransition(Conflict):
    """409 "Invalid State Transition"."""


class StaleAttempt(Conflict):
    """409 "Stale Attempt": an agent reported on an attempt that is no longer current."""


class PayloadTooLarge(GpufleetError):
    """413."""


class ValidationFailed(GpufleetError):
    """422: a field was refused; ``detail`` names it, ``errors`` lists every one."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        found = self.body.get("errors")
        return found if isinstance(found, list) else []


class RateLimited(GpufleetError):
    """429; ``retry_after`` is the seconds the server asked to wait (None if it did not say)."""

    retry_after: float | None = None


class ServerError(GpufleetError):
    """500 and other 5xx answers."""


class ServiceUnavailable(ServerError):
    """503 (and 502/504): the server or its database is not ready; try again."""


BY_STATUS: dict[int, type[GpufleetError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: BudgetExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}
BY_TITLE: dict[str, type[GpufleetError]] = {
    "Invalid State Transition": InvalidTransition,
    "Stale Attempt": StaleAttempt,
}


def error_class(status: int, title: str) -> type[GpufleetError]:
    cls = BY_TITLE.get(title) or BY_STATUS.get(status)
    if cls is not None and issubclass(cls, BY_STATUS.get(status, GpufleetError)):
        return cls
    return BY_STATUS.get(status) or (ServerError if status >= 500 else GpufleetError)


def api_error(response: httpx.Response) -> GpufleetError:
    """The error a >= 400 answer stands for (its body must have been read)."""
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:200]}
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": str(body)[:200]}
    title = str(body.get("title") or response.reason_phrase or "Error")
    detail = body.get("detail")
    exc = error_class(response.status_code, title)(
        response.status_code, title, str(detail) if detail is not None else None, body
    )
    if isinstance(exc, RateLimited):
        try:
            exc.retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            exc.retry_after = None
    return exc
