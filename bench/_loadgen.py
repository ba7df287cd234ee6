"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (lighter than an HTTP client
library, so that on a 2-core machine more of the CPU is left to the server being measured)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# A benchmark whose requests fail more often than this measured something else: it exits non-zero.
MAX_ERROR_RATE = 0.001


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def failed(self) -> bool:
        """More than MAX_ERROR_RATE of the requests failed (or none was made)."""
        return self.error_rate > MAX_ERROR_RATE

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else 0.0

        ok = self.requests - self.errors
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            # Successes only: an error answered fast is not throughput.
            "req_per_s": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else 0.0,
            "latency_of": "all responses, errors included",
            "failed": self.failed,
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
        return status, body
    return status, await reader.readexactly(length)


async def run(
    url: str,
    *,
    method: str,
    path: str,
    headers: dict[str, str],
    body: object | None = None,
    connections: int = 64,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if payload:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    result = Result()
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                writer.write(request)
                status, _ = await _read_response(reader)
                if measuring:
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    result.requests += 1
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status >= 400:
                        result.errors += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(warmup_s)
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result
