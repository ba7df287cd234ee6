"""Custom budget periods (N days repeating from a start) and the optional policy that stops a hard
budget's running work at 100 %, on a real database (timestamps backdated, never slept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from gpufleet.background import costs as costs_task
from gpufleet.db.pool import Database
from gpufleet.domain.costs import BudgetPeriod, PriceKind, parse_period
from gpufleet.errors import BudgetExceeded, InvalidInput
from gpufleet.sdk.costs import budget_body
from gpufleet.services import budgets, costs
from tests.factories import create_host, create_org, ctx_for, recent_budget_period
from tests.scheduling.helpers import scheduler, status_of, submit

A100 = ("A100-80GB", 81920)


async def _now(db: Database) -> datetime:
    async with db.system_transaction() as conn:
        value: datetime = await conn.fetchval("select date_trunc('second', now())")
    return value


async def _spend_at(db: Database, org_id: UUID, at: datetime, amount: str) -> None:
    """A closed cost row of ``amount`` for work that ran at ``at``."""
    async with db.system_transaction() as conn:
        await conn.execute(
            """insert into cost_tracking (organization_id, gpu_model, period_start, period_end, gpu_milli,
                                          hourly_price, amount)
               values ($1, 'A100-80GB', $2, $2, 1000, 2, $3)""",
            org_id,
            at,
            Decimal(amount),
        )


def test_periods_parse_as_calendar_names_or_days() -> None:
    assert parse_period("month") == (BudgetPeriod.MONTH, None)
    assert parse_period("14d") == (BudgetPeriod.CUSTOM, 14)
    for bad in ("custom", "2w", "d", "fortnight"):
        with pytest.raises(ValueError):
            parse_period(bad)


async def test_a_custom_period_repeats_from_its_start_and_counts_only_its_window(db: Database) -> None:
    org = await create_org(db)
    await costs.set_price(db, ctx_for(org.id), kind=PriceKind.GPU, gpu_model="A100-80GB", hourly_price=Decimal("2.00"))
    now = await _now(db)
    anchor = now - timedelta(days=20)  # periods: [now-20d, now-6d), [now-6d, now+8d), ...
    window = anchor + timedelta(days=14)
    await _spend_at(db, org.id, window - timedelta(microseconds=1), "50.00")  # the previous period
    await _spend_at(db, org.id, window, "12.34")
    await _spend_at(db, org.id, now - timedelta(hours=1), "17.66")
    b = await budgets.set_budget(
        db,
        ctx_for(org.id),
        amount_limit=Decimal("35"),
        period=BudgetPeriod.CUSTOM,
        period_days=14,
        starts_at=anchor,
        hard=True,
    )
    assert (b.period_days, b.period_anchor) == (14, anchor)
    (state,) = await budgets.list_budgets(db, ctx_for(org.id))
    assert (state.period_start, state.spent) == (window, Decimal("30.00"))

    with pytest.raises(BudgetExceeded) as refused:  # 30 + 3 h x $2.00 > 35
        await submit(db, org.id, max_runtime_s=3 * 3600)
    assert refused.value.message.startswith(
        "budget: $30.00 of $35.00 spent this 14-day period; this job may cost $6.00"
    )
    assert refused.value.extra["period"] == "custom"
    await submit(db, org.id, max_runtime_s=2 * 3600)  # 30 + 4.00 fits

    # A start still to come: the first period is the window, nothing before it counts.
    later = await budgets.set_budget(
        db, ctx_for(org.id), amount_limit=Decimal("35"), period=BudgetPeriod.CUSTOM, period_days=7,
        starts_at=now + timedelta(days=2),
    )  # fmt: skip
    (state,) = [s for s in await budgets.list_budgets(db, ctx_for(org.id)) if s.budget.id == later.id]
    assert (state.period_start, state.spent) == (now + timedelta(days=2), Decimal(0))


async def test_custom_period_settings_are_checked(db: Database) -> None:
    org = await create_org(db)
    with pytest.raises(InvalidInput):
        await budgets.set_budget(db, ctx_for(org.id), amount_limit=Decimal("1"), period=BudgetPeriod.CUSTOM)
    with pytest.raises(InvalidInput):
        await budgets.set_budget(
            db, ctx_for(org.id), amount_limit=Decimal("1"), period=BudgetPeriod.MONTH, period_days=3
        )
    with pytest.raises(InvalidInput):
        await budgets.set_budget(db, ctx_for(org.id), amount_limit=Decimal("1"), stop_running=True)  # soft


async def _running_work_over_budget(db: Database, *, stop_running: bool) -> tuple[UUID, UUID, UUID, UUID]:
    """Three jobs holding GPUs for an hour at $2.00 (two labelled team=a, one running), budget $1.00 of team=a."""
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,) * 3)
    await costs.set_price(db, ctx_for(org.id), kind=PriceKind.GPU, gpu_model="A100-80GB", hourly_price=Decimal("2.00"))
    b = await budgets.set_budget(
        db,
        ctx_for(org.id),
        amount_limit=Decimal("1.00"),
        hard=True,
        label=("team", "a"),
        stop_running=stop_running,
        **recent_budget_period(),
    )
    running = await submit(db, org.id, labels={"team": "a"})
    allocated = await submit(db, org.id, labels={"team": "a"})
    other = await submit(db, org.id, labels={"team": "b"})
    assert (await scheduler(db).run_once()).placed == 3
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set status = 'running', started_at = now() where id = $1", running)
        await conn.execute(
            "update allocations set created_at = now() - interval '1 hour' where organization_id = $1", org.id
        )
        await conn.execute("update gpu_prices set effective_from = now() - interval '1 day'")
    return b.id, running, allocated, other


async def test_a_hard_budget_with_stop_running_cancels_its_running_work_at_100_percent(db: Database) -> None:
    budget_id, running, allocated, other = await _running_work_over_budget(db, stop_running=True)
    report = await costs_task.run_once(db)
    assert report.jobs_stopped == 2
    status, _, reason = await status_of(db, allocated)
    assert status == "cancelled" and reason is not None
    assert reason.startswith(
        f"budget {budget_id} (label team=a) reached 100 %: $4.00 of $1.00 spent this 30-day period"
    )
    async with db.system_transaction() as conn:
        row = await conn.fetchrow(
            """select j.status, j.cancel_requested_at is not null as asked, e.data ->> 'reason' as reason, e.actor
                 from jobs j join events e on e.entity_id = j.id and e.type = 'job.cancel_requested'
                where j.id = $1""",
            running,
        )
    assert row is not None and (row["status"], row["asked"], row["actor"]) == ("running", True, "costs")
    assert row["reason"].startswith(f"budget {budget_id}")
    assert (await status_of(db, other))[0] == "allocated"  # outside the budget's scope
    assert (await costs_task.run_once(db)).jobs_stopped == 0  # asked once


async def test_without_the_policy_running_work_is_never_stopped(db: Database) -> None:
    _, running, allocated, _ = await _running_work_over_budget(db, stop_running=False)
    assert (await costs_task.run_once(db)).jobs_stopped == 0
    assert [(await status_of(db, j))[0] for j in (running, allocated)] == ["running", "allocated"]


def test_the_sdk_sends_a_custom_period_as_its_days_and_start() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert budget_body("300", "14d", True, None, "team=nlp", start, True) == {
        "amount": "300",
        "period": "custom",
        "period_days": 14,
        "starts_at": "2026-12-01T00:00:00+00:00",
        "hard": True,
        "stop_running": True,
        "user_id": None,
        "label": "team=nlp",
    }
    assert budget_body("5", BudgetPeriod.WEEK, False, None, None)["period"] == "week"
