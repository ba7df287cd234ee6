"""ASGI middleware: request ids and structured access logs, body-size limits, per-address rate limits."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpufleet.api.ratelimit import RateLimiter
from gpufleet.observability import ServerMetrics

log = logging.getLogger("gpufleet.access")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_LOGGED_PATH = 512


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for extra in ("method", "path", "status", "duration_ms", "client"):
            if hasattr(record, extra):
                doc[extra] = getattr(record, extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _problem(status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class _TooLarge(HTTPException):
    """Raised while the body streams in; Starlette's handlers turn it into the 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class GpufleetMiddleware:
    """One pass over every HTTP request: id, size limit, address rate limit, access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        body_limits: Sequence[tuple[re.Pattern[str], int]] = (),
        limiter: RateLimiter | None = None,
        ip_per_minute: int = 0,
        metrics: ServerMetrics | None = None,
    ) -> None:
        """``body_limits``: (path pattern, limit) pairs that replace ``max_body`` where they match."""
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_limits = tuple(body_limits)
        self.limiter = limiter
        self.ip_per_minute = ip_per_minute

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        client = (scope.get("client") or ("-", 0))[0]

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                extra = [(b"x-request-id", rid.encode())]
                for name, value in scope["state"].get("ratelimit_headers", []):
                    extra.append((name, value))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        max_body = next((n for pattern, n in self.body_limits if pattern.match(scope["path"])), self.max_body)
        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body:
                for m in _problem(413, "Content Too Large", f"request body over {max_body} bytes"):
                    await send_wrapped(m)
                return
            if self.limiter is not None and self.ip_per_minute and scope["path"].startswith("/v1"):
                d = self.limiter.hit(f"ip:{client}", self.ip_per_minute)
                if not d.allowed:
                    hdrs = [(b"retry-after", str(d.reset_s).encode())]
                    for m in _problem(429, "Too Many Requests", "rate limit for this address exceeded", hdrs):
                        await send_wrapped(m)
                    return
            seen = 0

            async def receive_limited() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > max_body:
                        raise _TooLarge(max_body)
                return message

            try:
                await self.app(scope, receive_limited, send_wrapped)
            except _TooLarge:
                if not status_holder["started"]:
                    for m in _problem(413, "Content Too Large", f"request body over {max_body} bytes"):
                        await send_wrapped(m)
        finally:
            if self.metrics is not None:
                route = getattr(scope.get("route"), "path", None)  # the template, e.g. /v1/jobs/{job_id}
                self.metrics.request(
                    scope.get("method", "-"), route, status_holder["status"], time.perf_counter() - started
                )
            path = str(scope.get("path", ""))
            if len(path) > MAX_LOGGED_PATH:  # a client's long path must not make a long log line
                path = path[: MAX_LOGGED_PATH - 3] + "..."
            log.info(
                "%s %s %s",
                scope.get("method"),
                path,
                status_holder["status"],
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status_holder["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": client,
                },
            )
            request_id_var.reset(token)
