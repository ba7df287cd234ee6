"""Events retention: events (and finished webhook deliveries) older than the retention are
deleted in batches, oldest first, so no statement holds many locks or a long transaction.
Expired idempotency keys (24 h, services/idempotency.py) go on the same schedule."""

from __future__ import annotations

import asyncio
import logging

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database, in_batches
from gpufleet.repo import events as repo
from gpufleet.services import idempotency

log = logging.getLogger(__name__)


async def run_once(db: Database, *, retention_days: int = 30, batch: int = 5000) -> tuple[int, int]:
    """(events deleted, deliveries deleted)."""
    days = retention_days
    events = await in_batches(db, lambda conn, n: repo.delete_older_than(conn, days=days, limit=n), batch=batch)
    deliveries = await in_batches(
        db, lambda conn, n: repo.delete_finished_deliveries_older_than(conn, days=days, limit=n), batch=batch
    )
    if events or deliveries:
        log.info("events retention: %d events and %d webhook deliveries deleted", events, deliveries)
    return events, deliveries


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db, retention_days=settings.events_retention_days, batch=settings.events_retention_batch)
        await idempotency.purge(db, batch=settings.events_retention_batch)

    await run_periodically("events-retention", once, interval_s=settings.retention_interval_s, stop=stop)
