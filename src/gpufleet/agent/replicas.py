"""Which server replica the agent talks to: every replica it was given, one at a time, sticky.

The agent stays on the replica that last answered. A connection error or a 5xx (a replica
stopping, restarting or cut off from the database answers 503) moves it to the next replica
at once, within the same request; once every replica has failed, the caller's backoff
(``gpufleet.backoff.delay_after`` with equal jitter, as every agent loop) applies before the next round. A 4xx
never moves it: every replica shares one database, so another would answer the same. 408 and
429 do not move it either (rate limits are counted in PostgreSQL across replicas).

One URL behind a load balancer is the other way to reach several replicas; both are
documented in docs/deployment.md ("Several replicas").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

log = logging.getLogger("gpufleet.agent")


def parse_servers(value: str | Iterable[str]) -> list[str]:
    """Server URLs from ``--server`` values: each may hold several, comma- or space-separated.

    Trailing slashes go, duplicates go (first kept); order is preference order. ValueError when
    none is left or one is not an http(s) URL.
    """
    items = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        for part in item.replace(",", " ").split():
            url = part.rstrip("/")
            if not url.startswith(("http://", "https://")) or url in ("http:", "https:"):
                raise ValueError(f"{part!r} is not a server URL (expected http://HOST:PORT or https://HOST)")
            if url not in urls:
                urls.append(url)
    if not urls:
        raise ValueError("no server URL given")
    return urls


def same_fleet(stored: str, configured: str) -> bool:
    """A credential stored for ``stored`` (one URL or a list) serves ``configured`` when the two
    name a replica in common: adding or removing replicas keeps the host's identity."""
    try:
        return bool(set(parse_servers(stored)) & set(parse_servers(configured)))
    except ValueError:
        return False


class ReplicaSet:
    """The replicas in preference order and the one in use now (sticky until it fails)."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no server URL given")
        self.urls = list(urls)
        self.current = 0
        self.switches = 0  # how many times the agent moved to another replica
        self.last_switch_at: float | None = None  # time.monotonic() of the last move

    @property
    def url(self) -> str:
        return self.urls[self.current]

    def __len__(self) -> int:
        return len(self.urls)

    def order(self) -> list[int]:
        """Indices to try for one request: the current replica, then the others in turn."""
        n = len(self.urls)
        return [(self.current + i) % n for i in range(n)]

    def failed(self, index: int, why: str) -> None:
        """Replica ``index`` failed a request. Move on if it is still the current one: two
        requests failing together on the same replica move the agent once, not twice."""
        if len(self.urls) < 2 or index != self.current:
            return
        self.current = (index + 1) % len(self.urls)
        self.switches += 1
        self.last_switch_at = time.monotonic()
        log.warning("server %s failed (%s); switching to %s", self.urls[index], why, self.url)
