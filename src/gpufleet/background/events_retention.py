"""Events retention: events (and finished webhook deliveries) older than the retention are
deleted in batches, oldest first, so no statement holds many locks or a long transaction.
Expired idempotency keys (24 h, services/idempotency.py) go on the same schedule."""

from __future__ import annotations

import asyncio
import logging

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.repo import events as repo
from gpufleet.services import idempotency

log = logging.getLogger(__name__)


async def run_once(db: Database, *, retention_days: int = 30, batch: int = 5000) -> tuple[int, int]:
    """(events deleted, deliveries deleted)."""
    totals = [0, 0]
    for i, delete in enumerate((repo.delete_older_than, repo.delete_finished_deliveries_older_than)):
        while True:
            async with db.system_transaction() as conn:
                n = await delete(conn, days=retention_days, limit=batch)
            totals[i] += n
            if n < batch:
                break
    if any(totals):
        log.info("events retention: %d events and %d webhook deliveries deleted", *totals)
    return totals[0], totals[1]


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db, retention_days=settings.events_retention_days, batch=settings.events_retention_batch)
        await idempotency.purge(db, batch=settings.events_retention_batch)

    await run_periodically("events-retention", once, interval_s=settings.retention_interval_s, stop=stop)
