"""Admin notifications on stderr (``gpufleet up --notify-stderr``): a single-machine install sees
allocation failures, unreachable hosts, unhealthy GPUs and disabled webhooks without a receiver.

Follows the events from the moment the server starts; each replica that has it on prints them.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from gpufleet.background.loop import run_periodically
from gpufleet.db.pool import Database
from gpufleet.domain.events import Event
from gpufleet.event_types import ADMIN_TYPES
from gpufleet.repo import events


def line(e: Event) -> str:
    detail = ", ".join(f"{k}={v}" for k, v in e.data.items() if v not in (None, "", [], {}))
    return f"gpufleet notice: {e.type} {e.entity_type} {e.entity_id} (org {e.organization_id}) {detail}".rstrip()


class StderrNotifier:
    def __init__(self, db: Database, out: TextIO | None = None) -> None:
        self.db = db
        self.out = out
        self.after: int | None = None

    async def run_once(self) -> int:
        async with self.db.system_transaction() as conn:
            if self.after is None:
                self.after = await events.max_seq(conn)
                return 0
            found = await events.of_types_after(conn, after_seq=self.after, types=sorted(ADMIN_TYPES))
        out = self.out or sys.stderr
        for e in found:
            out.write(line(e) + "\n")
        out.flush()
        if found:
            self.after = found[-1].seq
        return len(found)


async def run(db: Database, stop: asyncio.Event, *, interval_s: float = 1.0) -> None:
    notifier = StderrNotifier(db)
    await run_periodically("notify-stderr", notifier.run_once, interval_s=interval_s, stop=stop)
