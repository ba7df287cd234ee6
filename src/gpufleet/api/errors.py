"""One mapping from errors to RFC 9457 problem+json responses, for every route.

Hostile input must never turn into a 500 or a flood of log lines: the messages a client sent
text into are made printable (a lone surrogate would not even encode), a validation answer
lists a bounded number of errors, a lost database connection is a 503 the client may retry,
and an unexpected error logs one line of bounded size (see ``ContainUnexpected``).
"""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from gpufleet.api.middleware import HttpMiddleware
from gpufleet.errors import GpufleetError, RateLimited, Unauthorized

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
MAX_ERRORS = 20  # validation errors listed in one answer
MAX_TEXT = 300  # characters of any one message in an answer or a log line
MAX_TRACE = 4000  # characters of a traceback in the log
RETRY_AFTER_S = 2  # what a 503 asks the client to wait: the pool replaces a lost connection at once


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as it can be encoded and shown: lone surrogates escaped, length bounded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable_doc(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return printable(value, 4 * MAX_TEXT)
    if depth > 4:
        return None  # a problem document is ours and shallow; never walk a client's deep value
    if isinstance(value, dict):
        return {printable(str(k)): _printable_doc(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_doc(v, depth + 1) for v in value[:MAX_ERRORS]]
    return value


def problem(
    status: int, title: str, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(_printable_doc(body), status_code=status, media_type=PROBLEM, headers=headers)


def database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection is gone or refused (a retryable 503)."""
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError  # class 08: connection failure, closed mid-operation
        | asyncpg.exceptions.OperatorInterventionError  # 57: pg_terminate_backend, shutdown
        | asyncpg.exceptions.InsufficientResourcesError  # 53: too many connections
        # 25006: a primary demoted to a standby by a failover (Patroni, RDS): the next connection
        # reaches the new primary once DNS or the pooler follows.
        | asyncpg.exceptions.ReadOnlySQLTransactionError
        | ConnectionError
        | socket.gaierror  # the database's host name does not resolve (DNS moving during a failover)
        | TimeoutError,
    ):
        return True
    # 55000 for a database closed to connections (ALTER DATABASE ... ALLOW_CONNECTIONS false).
    if isinstance(exc, asyncpg.exceptions.ObjectNotInPrerequisiteStateError) and "accepting connections" in str(exc):
        return True
    # asyncpg's own "connection is closed"; and a connection the server terminated while idle,
    # whose protocol is left mid-state ("cannot switch to state ...; another operation is in progress").
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def schema_changed(exc: BaseException) -> bool:
    """A migration changed a table under this request's prepared statement (an upgrade while the
    replica runs). The transaction rolled back and asyncpg has dropped its statement cache, so
    the same request succeeds when retried: a 503, not a 500."""
    return isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError | asyncpg.exceptions.OutdatedSchemaCacheError)


def unavailable(detail: str = "the database connection was lost; retry shortly") -> JSONResponse:
    return problem(503, "Service Unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def bounded_trace(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback, at most ``MAX_TRACE`` characters."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-12, chain=False))
    return text if len(text) <= MAX_TRACE else "..." + text[-MAX_TRACE:]


class ContainUnexpected(HttpMiddleware):
    """Turns any error that escaped the handlers into one 500 problem and one bounded log line.

    Starlette's own 500 path re-raises to the server, which logs the whole traceback again
    (a RecursionError's is thousands of frames): nothing escapes this layer.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except StarletteHTTPException:
            raise  # an answer on purpose, e.g. the 413 of a body over the limit while it streams in
        except Exception as exc:
            if database_lost(exc):
                log.warning("database connection lost: %s", printable(f"{type(exc).__name__}: {exc}"))
                response = unavailable()
            elif schema_changed(exc):
                log.warning("database schema changed under a request (an upgrade): %s", printable(str(exc)))
                response = unavailable("the database schema changed during this request (an upgrade); retry it")
            else:
                log.error("unhandled error: %s", bounded_trace(exc))
                response = problem(500, "Internal Server Error", "an unexpected error occurred; see the server log")
            if started:
                return  # a stream already under way: the client sees it cut, and reconnects
            await response(scope, receive, send)


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
        if exc.status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        if exc.status >= 500:
            log.error("request failed: %s", exc)
        return problem(exc.status, exc.title, exc.message, headers=headers or None, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": printable(_loc(e.get("loc", ()))),
                "message": printable(str(e.get("msg", "invalid"))),
                "type": e.get("type"),
            }
            for e in exc.errors()[:MAX_ERRORS]
        ]
        first = errors[0] if errors else {"field": "?", "message": "invalid request"}
        return problem(422, "Unprocessable Content", f"{first['field']}: {first['message']}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        detail = exc.detail if isinstance(exc.detail, str) else None
        titles = {
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            401: "Unauthorized",
            403: "Forbidden",
            413: "Content Too Large",
            429: "Too Many Requests",
        }
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=headers or None)

    @app.exception_handler(asyncpg.DataError)
    async def _out_of_range(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # The schemas bound every value to its column (schemas/common.py); this is the backstop.
        log.warning("value refused by the database: %s", printable(f"{type(exc).__name__}: {exc}"))
        return problem(422, "Unprocessable Content", "a value is outside the range the database stores")
