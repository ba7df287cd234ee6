"""One HTTP attempt to a receiver: to the validated address, 10 s in all, no redirects followed.

HTTP/1.1 straight over asyncio streams, framed by ``h11`` (the parser under httpx): a delivery
is one POST and one response, and httpx's general machinery (httpcore's pool bookkeeping, anyio
socket wrappers, URL and header models built per request) was most of the worker's CPU per
delivery (bench/webhooks.py). Connections are kept alive in a pool per (scheme, host, address,
port), bounded per key and in keys, so deliveries to one receiver reuse them and a TLS connection
is never shared between two host names. The socket is opened to ``Target.address`` itself (no
lookup here), TLS checks the certificate against ``Target.host`` (SNI too), and a 3xx is an
outcome like any status: nothing is followed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import h11
import httpx

from gpufleet import __version__
from gpufleet.webhooks.ssrf import Target

BODY_LIMIT = 4096
KEPT_HEADERS = ("content-type", "content-length", "retry-after", "location", "server", "date")
_MAX_POOLS = 256
_KEEPALIVE_S = 30.0
_USER_AGENT = f"gpufleet-webhooks/{__version__}".encode()


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


class ConnectError(Exception):
    """The receiver could not be reached (refused, unreachable, TLS handshake failed)."""


class ProtocolError(Exception):
    """The receiver answered something that is not HTTP/1.1 (or hung up mid-answer)."""


def _text(raw: bytes) -> str:
    # The first 4 KiB, as text PostgreSQL can store (no NUL; a cut multi-byte character replaced).
    return raw[:BODY_LIMIT].decode("utf-8", errors="replace").replace("\x00", "\ufffd")[:BODY_LIMIT]


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        # A peer that hung up while the connection sat idle has fed EOF by now; an old one may be
        # about to be closed by the receiver's own keep-alive timer.
        return not (self.reader.at_eof() or self.writer.is_closing()) and now - self.idle_since < _KEEPALIVE_S

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Connections to one (scheme, host, address, port): at most ``size`` open, idle ones reused."""

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.idle: list[_Conn] = []
        self.closed = False

    def take(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    def give(self, conn: _Conn) -> None:
        if self.closed:
            conn.close()
        else:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Sender:
    def __init__(
        self, *, timeout_s: float = 10.0, per_host_connections: int = 8, tls: ssl.SSLContext | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.per_host_connections = per_host_connections
        self._pools: OrderedDict[tuple[str, str, str, int], _Pool] = OrderedDict()
        self._tls = tls  # None: httpx's defaults (system-independent CA bundle), built on first use

    def _pool(self, t: Target) -> _Pool:
        key = (t.scheme, t.host, t.address, t.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self.per_host_connections)
            while len(self._pools) > _MAX_POOLS:
                self._pools.popitem(last=False)[1].close()
        else:
            self._pools.move_to_end(key)
        return pool

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # built once (loading the CA bundle costs milliseconds): httpx's defaults
            self._tls = httpx.create_ssl_context()
        return self._tls

    async def _connect(self, t: Target) -> _Conn:
        tls = self._tls_context() if t.scheme == "https" else None
        try:
            reader, writer = await asyncio.open_connection(
                t.address, t.port, ssl=tls, server_hostname=t.host if tls else None, limit=2**16
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return _Conn(reader, writer, h11.Connection(h11.CLIENT))

    async def send(self, target: Target, body: bytes, headers: dict[str, str]) -> Outcome:
        started = time.perf_counter()
        pool = self._pool(target)
        conn: _Conn | None = None
        reusable = False
        try:
            async with asyncio.timeout(self.timeout_s), pool.slots:
                conn = pool.take() or await self._connect(target)
                status, kept, raw, reusable = await self._exchange(conn, target, body, headers)
        except TimeoutError:
            return Outcome(None, _ms(started), error=f"timed out after {self.timeout_s:g} s")
        except (ConnectError, ProtocolError, OSError, h11.ProtocolError) as exc:
            return Outcome(None, _ms(started), error=f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        finally:
            if conn is not None:
                if reusable:
                    pool.give(conn)
                else:
                    conn.close()
        return Outcome(status, _ms(started), kept, _text(raw))

    async def _exchange(
        self, conn: _Conn, t: Target, body: bytes, extra: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, bool]:
        http = conn.http
        head = [
            *((k.encode(), v.encode()) for k, v in extra.items()),
            (b"host", t.host_header.encode()),
            (b"content-type", b"application/json"),
            (b"user-agent", _USER_AGENT),
            (b"content-length", str(len(body)).encode()),
        ]
        out = http.send(h11.Request(method=b"POST", target=t.target.encode(), headers=head))
        conn.writer.write(
            b"".join((out or b"", http.send(h11.Data(data=body)) or b"", http.send(h11.EndOfMessage()) or b""))
        )
        await conn.writer.drain()
        response: h11.Response | None = None
        raw = b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(65536)
                if not data and response is None:
                    raise ProtocolError("the receiver closed the connection without a response")
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                raw += event.data
                if len(raw) >= BODY_LIMIT:  # enough kept: the rest is not read, so the connection goes
                    break
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                if response is None:
                    raise ProtocolError("the receiver closed the connection without a response")
                break
            # an InformationalResponse (1xx) is skipped: the final answer follows
        if response is None:  # pragma: no cover - h11 yields a Response before any Data or end
            raise ProtocolError("no response")
        reusable = http.our_state is h11.DONE and http.their_state is h11.DONE
        if reusable:
            http.start_next_cycle()
        kept: dict[str, str] = {}
        for name, value in response.headers:
            key = name.decode("latin-1")
            if key in KEPT_HEADERS:  # repeated ones joined, as httpx did
                v = value.decode("latin-1")
                kept[key] = f"{kept[key]}, {v}" if key in kept else v
        kept = {k: v[:500] for k, v in kept.items()}
        return response.status_code, kept, raw, reusable

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()
        await asyncio.sleep(0)  # let the transports close


def _ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))
