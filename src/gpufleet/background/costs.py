"""Cost accounting in the background: close running work's cost rows hourly, emit budget thresholds.

Release already closes an allocation's last interval in its own transaction; this task only
writes whole hours of work still running (so a report for last month never depends on a live
computation), tells budgets about what was spent, and stops the running work of hard budgets
at 100 % that ask for it (``stop_running``). Both steps are idempotent: replicas running
it at once skip each other's locked rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database, in_batches
from gpufleet.repo import costs as repo
from gpufleet.services import budget_stop, budgets


@dataclass(frozen=True, slots=True)
class CostsReport:
    allocations_closed: int
    threshold_events: int
    jobs_stopped: int = 0  # by hard budgets with stop_running at 100 %


CLOSE_BATCH = 500  # allocations per transaction


async def run_once(db: Database) -> CostsReport:
    closed = await in_batches(db, lambda conn, n: repo.close_intervals(conn, limit=n), batch=CLOSE_BATCH)
    events = await budgets.check_thresholds(db)
    return CostsReport(closed, events, await budget_stop.stop_overspent(db))


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db)

    await run_periodically("costs", once, interval_s=settings.costs_interval_s, stop=stop)
