"""The optional policy of hard budgets (``stop_running``, off by default): at 100 % of its limit a
budget's running work is cancelled by the server, through the ordinary cancel path. Run by the
``costs`` background task (background/costs.py) after the hourly close (docs/costs.md).
"""

from __future__ import annotations

import logging
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.costs import money
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidTransition, NotFound
from gpufleet.repo import budgets as repo
from gpufleet.services import jobs as jobs_service

log = logging.getLogger(__name__)


async def stop_overspent(db: Database) -> int:
    """Cancel the running work of every hard budget with ``stop_running`` at 100 % of its limit.

    Through the ordinary cancel path (allocated work ends at once, running work is asked to stop
    and its agent kills it), with a reason naming the budget; returns how many jobs were asked.
    """
    targets: list[tuple[UUID, UUID, str]] = []
    async with db.system_transaction() as conn:
        states = await repo.states(
            conn, org_ids=None, hard_only=True, outstanding_statuses=(), lock=True, skip_locked=True
        )
        for s in states:
            b = s.budget
            if not b.stop_running or s.spent < b.amount_limit or not s.spent:
                continue
            why = (
                f"budget {b.id} ({b.scope}) reached 100 %: {money(s.spent, b.currency)} of "
                f"{money(b.amount_limit, b.currency)} spent this {b.period_name}"
            )
            targets += [(b.organization_id, j, why) for j in await repo.running_jobs_in_scope(conn, budget=b)]
    stopped = 0
    for org_id, job_id, why in targets:
        try:
            await jobs_service.cancel(db, TenantContext.system(org_id, "costs"), job_id, reason=why)
            stopped += 1
        except (NotFound, InvalidTransition):
            continue  # it ended meanwhile
    if stopped:
        log.info("stopped %d jobs of budgets at 100 %%", stopped)
    return stopped
