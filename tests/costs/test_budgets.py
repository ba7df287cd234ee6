"""Budgets on a real database: admission refusals, the locked check at placement (concurrent
submissions and concurrent commits never overspend), pending reasons and threshold events."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.costs import BudgetPeriod, PriceKind
from gpufleet.errors import BudgetExceeded
from gpufleet.repo import scheduling as sched_repo
from gpufleet.scheduler import commit
from gpufleet.scheduler.model import GpuShare, Placement
from gpufleet.services import budgets, costs
from gpufleet.services.allocation import allocate_gpu
from tests.factories import create_host, create_job, create_org, ctx_for
from tests.scheduling.helpers import scheduler, status_of, submit

A100 = ("A100-80GB", 81920)


async def _priced_org(db: Database, *, limit: str, hard: bool = True) -> UUID:
    org = await create_org(db)
    await costs.set_price(db, ctx_for(org.id), kind=PriceKind.GPU, gpu_model="A100-80GB", hourly_price=Decimal("2.00"))
    await budgets.set_budget(db, ctx_for(org.id), amount_limit=Decimal(limit), period=BudgetPeriod.MONTH, hard=hard)
    return org.id


async def _spend(db: Database, org_id: UUID, amount: str) -> None:
    """A closed cost row of ``amount`` earlier this month (as the metering would have written)."""
    async with db.system_transaction() as conn:
        await conn.execute(
            """insert into cost_tracking (organization_id, gpu_model, period_start, period_end, gpu_milli,
                                          hourly_price, amount)
               values ($1, 'A100-80GB', date_trunc('month', now()), date_trunc('month', now()), 1000, 2, $2)""",
            org_id,
            Decimal(amount),
        )


async def test_a_job_that_would_overspend_is_refused_with_the_numbers(db: Database) -> None:
    org_id = await _priced_org(db, limit="500")
    await _spend(db, org_id, "493.20")
    await submit(db, org_id, max_runtime_s=3 * 3600)  # 3 h x $2.00: 493.20 + 6.00 fits in 500
    with pytest.raises(BudgetExceeded) as refused:
        await submit(db, org_id, max_runtime_s=3600)  # $2.00 more does not
    e = refused.value
    assert (e.extra["spent"], e.extra["remaining"], e.extra["estimate"]) == ("499.20", "0.80", "2.00")
    assert e.message.startswith(
        "budget: $493.20 of $500.00 spent, $6.00 reserved by work already admitted this month; this job may cost $2.00"
    )


async def test_concurrent_submissions_never_overspend(db: Database) -> None:
    org_id = await _priced_org(db, limit="10")
    outcomes = await asyncio.gather(
        *(submit(db, org_id, max_runtime_s=3 * 3600) for _ in range(6)), return_exceptions=True
    )
    admitted = [o for o in outcomes if isinstance(o, UUID)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(admitted) == 1 and len(refused) == 5, outcomes
    e = refused[0]
    assert e.status == 402
    assert (e.extra["budget"], e.extra["spent"], e.extra["remaining"], e.extra["estimate"]) == (
        "10.00",
        "6.00",
        "4.00",
        "6.00",
    )
    assert "budget: $0.00 of $10.00 spent, $6.00 reserved by work already admitted this month" in e.message


async def test_placement_rechecks_the_budget_under_lock(db: Database) -> None:
    org_id = await _priced_org(db, limit="10")
    for _ in range(2):  # two hosts: the writers share no ledger row, only the budget
        await create_host(db, org_id, gpus_spec=(A100,))
    # Two jobs admitted before the budget shrank (written directly: admission is not under test)
    jobs = [await create_job(db, org_id, max_runtime_s=3 * 3600) for _ in range(2)]
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set cost_estimate = 6 where organization_id = $1", org_id)
        snap = await sched_repo.snapshot(conn, queue_limit=10)
    hosts = [(h.id, h.gpus[0].id) for h in snap.hosts[org_id]]
    by_id = {j.id: j for j in snap.pending}
    # Two writers, each deciding on its own stale snapshot that its job fits: they race to commit.
    batches = [
        commit.rows_of([(by_id[j.id], Placement(str(j.id), h, (GpuShare(g, 1000, 81920),), 0, 0))])
        for j, (h, g) in zip(jobs, hosts, strict=True)
    ]
    # Both writers are held at the host locks and let go at once, so both reach the budget check
    # before either commits: only the budget lock can keep them from spending the same $10.
    async with db.system_transaction() as conn:
        await conn.execute("select 1 from hosts where organization_id = $1 for update", org_id)
        racing = asyncio.gather(*(commit.commit_batch(db, b) for b in batches))
        await asyncio.sleep(0.5)
    outcomes = await racing
    assert sorted(len(o.placed) for o in outcomes) == [0, 1]
    assert sorted(len(o.conflicts) for o in outcomes) == [0, 1]
    # The next cycle explains why the other waits instead of placing it.
    await scheduler(db).run_once()
    waiting = next(j.id for j, o in zip(jobs, outcomes, strict=True) if not o.placed)
    status, reason, _ = await status_of(db, waiting)
    assert status == "pending"
    assert reason == (
        "budget: $0.00 of $10.00 spent, $6.00 reserved by work already admitted this month; this job may cost $6.00"
    )


async def test_allocate_gpu_refuses_a_job_over_a_hard_budget(db: Database) -> None:
    org_id = await _priced_org(db, limit="10")
    _, (gpu,) = await create_host(db, org_id, gpus_spec=(A100,))
    job = await create_job(db, org_id, max_runtime_s=3 * 3600)
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set cost_estimate = 6 where id = $1", job.id)
    await _spend(db, org_id, "4.01")
    with pytest.raises(BudgetExceeded):
        await allocate_gpu(db, ctx_for(org_id), gpu_id=gpu.id, job_id=job.id)
    assert (await status_of(db, job.id))[0] == "pending"  # nothing changed
    await budgets.set_budget(db, ctx_for(org_id), amount_limit=Decimal("10.01"), hard=True)
    await allocate_gpu(db, ctx_for(org_id), gpu_id=gpu.id, job_id=job.id)  # 4.01 + 6 fits exactly
    assert (await status_of(db, job.id))[0] == "allocated"


async def test_queued_work_waits_once_the_budget_is_spent(db: Database) -> None:
    org_id = await _priced_org(db, limit="500")
    await create_host(db, org_id, gpus_spec=(A100,))
    job = await submit(db, org_id)  # no max runtime: admitted while anything is left
    await _spend(db, org_id, "500")
    await scheduler(db).run_once()
    assert await status_of(db, job) == ("pending", "budget: $500.00 of $500.00 spent this month", None)
    with pytest.raises(BudgetExceeded):
        await submit(db, org_id)
    await budgets.set_budget(db, ctx_for(org_id), amount_limit=Decimal("600"), hard=True)
    assert (await scheduler(db).run_once()).placed == 1


async def test_soft_budgets_refuse_nothing_and_thresholds_fire_once_each(db: Database) -> None:
    org_id = await _priced_org(db, limit="100", hard=False)
    await _spend(db, org_id, "55")
    await submit(db, org_id, max_runtime_s=100 * 3600)  # soft: never refused
    assert await budgets.check_thresholds(db) == 1
    assert await budgets.check_thresholds(db) == 0
    await _spend(db, org_id, "50")
    assert await budgets.check_thresholds(db) == 2
    async with db.system_transaction() as conn:
        rows = await conn.fetch(
            "select data from events where organization_id = $1 and type = 'budget.threshold' order by seq", org_id
        )
    assert [r["data"]["threshold_pct"] for r in rows] == [50, 80, 100]
    assert rows[-1]["data"]["spent"] == "105.00" and rows[-1]["data"]["budget"] == "100.00"
