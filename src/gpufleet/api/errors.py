"""One mapping from errors to RFC 9457 problem+json responses, for every route."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpufleet.errors import GpufleetError, RateLimited, Unauthorized

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "/".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(GpufleetError)
    async def _domain(request: Request, exc: GpufleetError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="gpufleet"'
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status >= 500:
            log.error("request failed: %s", exc)
        return problem(exc.status, exc.title, exc.message, headers=headers or None, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _loc(e.get("loc", ())), "message": e.get("msg", "invalid"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "?", "message": "invalid request"}
        return problem(422, "Unprocessable Content", f"{first['field']}: {first['message']}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        detail = exc.detail if isinstance(exc.detail, str) else None
        titles = {
            404: "Not Found",
            405: "Method Not Allowed",
            401: "Unauthorized",
            403: "Forbidden",
            413: "Content Too Large",
            429: "Too Many Requests",
        }
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred; see the server log")
