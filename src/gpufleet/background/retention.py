"""Metric retention: roll raw samples into hourly rollups, then drop what is past retention.

Order matters: hours are rolled up before their raw samples can be dropped. Every step is
idempotent (upserts, ``drop ... if exists``), so concurrent runs on several replicas only
repeat work. Partition DDL runs as the owner; reading and deleting rows runs on the system path.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.repo import metrics as repo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    partitions_created: int
    rolled_from: datetime | None
    rolled_to: datetime | None
    rollup_rows: int
    partitions_dropped: list[str] = field(default_factory=list)
    raw_rows_deleted: int = 0
    rollups_deleted: int = 0


async def run_once(
    db: Database,
    *,
    retention_days: int = 7,
    rollup_retention_days: int = 400,
    rollup_delay_s: int = 300,
    days_ahead: int = 3,
) -> RetentionReport:
    async with db.owner_connection() as conn:
        created = await repo.ensure_partitions(conn, days_back=1, days_ahead=days_ahead)
    async with db.system_transaction() as conn:
        window = await repo.rollup_window(conn, delay_s=rollup_delay_s)
        rolled = await repo.roll_up(conn, start=window[0], end=window[1]) if window else 0
        cutoff = await repo.raw_cutoff(conn, retention_days=retention_days)
    dropped: list[str] = []
    async with db.owner_connection() as conn:
        for name in await repo.old_partitions(conn, retention_days=retention_days):
            await repo.drop_partition(conn, name=name)
            dropped.append(name)
    async with db.system_transaction() as conn:
        # Daily partitions past retention are gone; this clears the default partition's rows.
        deleted = await repo.delete_raw_before(conn, cutoff=cutoff)
        rollups_deleted = await repo.delete_rollups_before(conn, retention_days=rollup_retention_days)
    report = RetentionReport(
        partitions_created=created,
        rolled_from=window[0] if window else None,
        rolled_to=window[1] if window else None,
        rollup_rows=rolled,
        partitions_dropped=dropped,
        raw_rows_deleted=deleted,
        rollups_deleted=rollups_deleted,
    )
    if created or rolled or dropped or deleted or rollups_deleted:
        log.info("metrics retention: %s", report)
    return report


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(
            db,
            retention_days=settings.metrics_retention_days,
            rollup_retention_days=settings.rollup_retention_days,
            rollup_delay_s=settings.rollup_delay_s,
        )

    await run_periodically("metrics-retention", once, interval_s=settings.retention_interval_s, stop=stop)
