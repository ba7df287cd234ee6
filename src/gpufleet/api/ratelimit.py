"""Fixed-window rate limits that hold across replicas.

Each replica counts requests locally and, every ``sync_s`` seconds, adds its counts to
PostgreSQL and reads back the totals of every replica. A request is refused when the last
known total plus this replica's unsynced count reaches the limit, so N replicas overshoot
a limit by at most what they admit within one sync interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gpufleet.db.pool import Database
from gpufleet.repo import ratelimits

log = logging.getLogger(__name__)

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int


class RateLimiter:
    def __init__(self, db: Database, *, sync_s: float = 1.0) -> None:
        self.db = db
        self.sync_s = sync_s
        self._pending: dict[tuple[str, int], int] = {}
        self._totals: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()

    def hit(self, bucket: str, limit: int, *, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        key = (bucket, window)
        used = self._totals.get(key, 0) + self._pending.get(key, 0)
        reset = WINDOW_S - int(now % WINDOW_S)
        if used >= limit:
            return Decision(False, limit, 0, reset)
        self._pending[key] = self._pending.get(key, 0) + 1
        return Decision(True, limit, max(limit - used - 1, 0), reset)

    async def sync(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, {}
            current = int(time.time() // WINDOW_S)
            # Forget windows that are over; keep refreshing the totals of buckets seen in this one,
            # so that what other replicas admitted becomes visible here even when idle.
            self._totals = {k: v for k, v in self._totals.items() if k[1] >= current - 1}
            for k in self._totals:
                if k[1] == current:
                    pending.setdefault(k, 0)
            if not pending:
                return
            keys = list(pending)
            starts = [datetime.fromtimestamp(w * WINDOW_S, UTC) for _, w in keys]
            try:
                async with self.db.system_transaction() as conn:
                    totals = await ratelimits.add_and_read(
                        conn, buckets=[b for b, _ in keys], windows=starts, deltas=[pending[k] for k in keys]
                    )
                    if current % 10 == 0:
                        await ratelimits.prune(conn, before=datetime.now(UTC) - timedelta(minutes=10))
            except Exception:
                # Keep counting locally; the next sync carries these counts.
                for k, v in pending.items():
                    self._pending[k] = self._pending.get(k, 0) + v
                raise
            for (bucket, start), total in totals.items():
                self._totals[(bucket, int(start.timestamp()) // WINDOW_S)] = total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.sync_s)
            try:
                await self.sync()
            except Exception as exc:  # the database may be briefly unreachable
                log.warning("rate-limit sync failed: %s", exc)
