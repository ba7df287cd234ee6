"""ASGI middleware, one job each, outermost first as ``api/app.py`` installs them:

``RequestId`` (the id of the request, in the ``X-Request-ID`` header and every log line),
``AccessLog`` (one structured log line and the HTTP metrics per request, 413 and 429 included),
``BodyLimit`` (413 past the size allowed for the path, before anything else is spent on it) and
``AddressRateLimit`` (429 per client address; it also adds the per-key ``RateLimit-*`` headers
that ``deps.current_principal`` leaves in ``scope["state"]``, as errors answer with them too).

Plain ASGI classes rather than ``BaseHTTPMiddleware``: no task per request, and streamed answers
(Server-Sent Events) pass through unbuffered. Not asgi-correlation-id or structlog: the request id
is the ten lines of ``RequestId`` and a context variable, and ``observability.JsonFormatter`` writes
the JSON lines; neither library would remove more than it adds.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpufleet.api.ratelimit import RateLimiter
from gpufleet.observability import ServerMetrics, request_id_var

log = logging.getLogger("gpufleet.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_LOGGED_PATH = 512


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The request header ``name`` (lower case); the last one when it is repeated."""
    found = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


def _with_headers(send: Send, extra: Sequence[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` to the response's headers."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and extra:
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _problem(
    send: Send, status: int, title: str, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpMiddleware:
    """Passes anything but HTTP (lifespan, websockets) straight through; ``http`` does the job."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestId(HttpMiddleware):
    """Takes the client's ``X-Request-ID`` when it is sane, else makes one; sets it for the logs
    (``observability.request_id_var``), in ``scope["state"]`` and on the response."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        try:
            await self.app(scope, receive, _with_headers(send, [(b"x-request-id", rid.encode())]))
        finally:
            request_id_var.reset(token)


class AccessLog(HttpMiddleware):
    """One log line per request (method, path, status, duration, client) and the HTTP metrics."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics | None = None) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # when no answer started

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                route = getattr(scope.get("route"), "path", None)  # the template, e.g. /v1/jobs/{job_id}
                self.metrics.request(scope.get("method", "-"), route, status, elapsed)
            path = str(scope.get("path", ""))
            if len(path) > MAX_LOGGED_PATH:  # a client's long path must not make a long log line
                path = path[: MAX_LOGGED_PATH - 3] + "..."
            log.info(
                "%s %s %s",
                scope.get("method"),
                path,
                status,
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("-", 0))[0],
                },
            )


class AddressRateLimit(HttpMiddleware):
    """Refuses ``/v1`` requests past ``per_minute`` from one client address (429, Retry-After);
    adds the per-key ``RateLimit-*`` headers that authentication left in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter | None = None, per_minute: int = 0) -> None:
        super().__init__(app)
        self.limiter = limiter
        self.per_minute = per_minute

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is not None and self.per_minute and scope["path"].startswith("/v1"):
            client = (scope.get("client") or ("-", 0))[0]
            d = self.limiter.hit(f"ip:{client}", self.per_minute)
            if not d.allowed:
                retry = [(b"retry-after", str(d.reset_s).encode())]
                await _problem(send, 429, "Too Many Requests", "rate limit for this address exceeded", retry)
                return
        state = scope.setdefault("state", {})

        async def send_key_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and state.get("ratelimit_headers"):
                message = {**message, "headers": [*message.get("headers", []), *state["ratelimit_headers"]]}
            await send(message)

        await self.app(scope, receive, send_key_headers)


class _TooLarge(HTTPException):
    """Raised while the body streams in; Starlette's handlers turn it into the 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit(HttpMiddleware):
    """413 for a body over ``max_body`` bytes, judged by Content-Length first, then as it streams in.

    ``body_limits``: (path pattern, limit) pairs that replace ``max_body`` where they match."""

    def __init__(self, app: ASGIApp, *, max_body: int, body_limits: Sequence[tuple[re.Pattern[str], int]] = ()) -> None:
        super().__init__(app)
        self.max_body = max_body
        self.body_limits = tuple(body_limits)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        max_body = next((n for pattern, n in self.body_limits if pattern.match(scope["path"])), self.max_body)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            await _problem(send, 413, "Content Too Large", f"request body over {max_body} bytes")
            return
        seen = 0
        started = False

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    raise _TooLarge(max_body)
            return message

        async def send_seen(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_limited, send_seen)
        except _TooLarge:
            if not started:
                await _problem(send, 413, "Content Too Large", f"request body over {max_body} bytes")
