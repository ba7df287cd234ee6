"""The costs task: closes running work's hours in short transactions, then emits threshold events."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gpufleet.background import costs as costs_task
from gpufleet.db.pool import Database
from gpufleet.domain.costs import PriceKind
from gpufleet.services import budgets, costs
from tests.factories import create_host, create_org, ctx_for, recent_budget_period
from tests.scheduling.helpers import scheduler, submit

A100 = ("A100-80GB", 81920)


async def test_run_once_closes_hours_in_batches_and_tells_budgets(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(costs_task, "CLOSE_BATCH", 2)
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,) * 3)
    await costs.set_price(db, ctx_for(org.id), kind=PriceKind.GPU, gpu_model="A100-80GB", hourly_price=Decimal("2"))
    await budgets.set_budget(db, ctx_for(org.id), amount_limit=Decimal("10"), **recent_budget_period())
    for _ in range(3):
        await submit(db, org.id)
    assert (await scheduler(db).run_once()).placed == 3
    async with db.system_transaction() as conn:  # 3 GPUs for 2 h (from the top of an hour) at $2: $12
        await conn.execute(
            "update allocations set created_at = date_trunc('hour', now()) - interval '2 hours' where organization_id = $1",
            org.id,
        )
        await conn.execute("update gpu_prices set effective_from = now() - interval '1 day'")
    report = await costs_task.run_once(db)
    assert report == costs_task.CostsReport(allocations_closed=3, threshold_events=3)  # 50, 80 and 100 %
    async with db.system_transaction() as conn:
        closed = await conn.fetchval("select sum(amount) from cost_tracking where organization_id = $1", org.id)
    assert closed == Decimal("12.000000")
    assert await costs_task.run_once(db) == costs_task.CostsReport(0, 0)
