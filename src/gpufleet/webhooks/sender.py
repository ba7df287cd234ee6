"""One HTTP attempt to a receiver: to the validated address, 10 s in all, no redirects followed.

Clients are kept per (scheme, host, address, port), so connections are reused across deliveries
to the same receiver and a TLS connection is never shared between two host names.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import httpx

from gpufleet import __version__
from gpufleet.webhooks.ssrf import Target

BODY_LIMIT = 4096
KEPT_HEADERS = ("content-type", "content-length", "retry-after", "location", "server", "date")
_MAX_CLIENTS = 256


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt got: a status (any, 3xx included) or an error in words."""

    status_code: int | None
    latency_ms: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _text(raw: bytes) -> str:
    # The first 4 KiB, as text PostgreSQL can store (no NUL; a cut multi-byte character replaced).
    return raw[:BODY_LIMIT].decode("utf-8", errors="replace").replace("\x00", "\ufffd")[:BODY_LIMIT]


class Sender:
    def __init__(self, *, timeout_s: float = 10.0, per_host_connections: int = 8) -> None:
        self.timeout_s = timeout_s
        self.per_host_connections = per_host_connections
        self._clients: OrderedDict[tuple[str, str, str, int], httpx.AsyncClient] = OrderedDict()

    def _client(self, t: Target) -> httpx.AsyncClient:
        key = (t.scheme, t.host, t.address, t.port)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the guard must see the real peer
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.per_host_connections, keepalive_expiry=30),
            )
            self._clients[key] = client
            while len(self._clients) > _MAX_CLIENTS:
                _, old = self._clients.popitem(last=False)
                asyncio.get_running_loop().create_task(old.aclose())
        else:
            self._clients.move_to_end(key)
        return client

    async def send(self, target: Target, body: bytes, headers: dict[str, str]) -> Outcome:
        url = httpx.URL(scheme=target.scheme, host=target.address, port=target.port, raw_path=target.target.encode())
        all_headers = {
            **headers,
            "host": target.host_header,
            "content-type": "application/json",
            "user-agent": f"gpufleet-webhooks/{__version__}",
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                request = self._client(target).build_request(
                    "POST", url, content=body, headers=all_headers, extensions=extensions
                )
                response = await self._client(target).send(request, stream=True)
                try:
                    raw = b""
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if len(raw) >= BODY_LIMIT:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(None, _ms(started), error=f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(None, _ms(started), error=f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        kept = {k: response.headers[k][:500] for k in KEPT_HEADERS if k in response.headers}
        return Outcome(response.status_code, _ms(started), kept, _text(raw))

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()


def _ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))
