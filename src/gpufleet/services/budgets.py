"""Budgets as use cases: set, list (with spend), delete; admission of new work; threshold events.

A budget bounds what a scope (the organization, one user, or the jobs with one label) spends in
a calendar period (UTC). Every budget emits ``budget.threshold`` at 50, 80 and 100 % of its limit,
once each per period. A *hard* budget also refuses work: at submission a job whose estimate no
longer fits is refused (402), and at placement (the scheduler's commit transaction, with the
budget rows locked) a queued job that no longer fits waits with a pending reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.costs import THRESHOLDS, Budget, BudgetPeriod, BudgetState, cents, first_block
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import BudgetExceeded, InvalidInput, NotFound
from gpufleet.repo import budgets as repo
from gpufleet.repo import costs as costs_repo
from gpufleet.repo import events
from gpufleet.services.lookup import found

log = logging.getLogger(__name__)

MAX_LIMIT = Decimal("999999999999.99")  # numeric(14, 2)
MAX_PERIOD_DAYS = 366
ADMISSION_STATUSES = ("pending", "allocated", "running")  # estimates reserved at submission
PLACEMENT_STATUSES = ("allocated", "running")  # the job being placed is counted on its own
THRESHOLD_EVENT = "budget.threshold"


async def set_budget(
    db: Database,
    ctx: TenantContext,
    *,
    amount_limit: Decimal,
    period: BudgetPeriod = BudgetPeriod.MONTH,
    hard: bool = False,
    user_id: UUID | None = None,
    label: tuple[str, str] | None = None,
    period_days: int | None = None,
    starts_at: datetime | None = None,
    stop_running: bool = False,
) -> Budget:
    """Create or replace the budget of this scope and period.

    ``period`` CUSTOM: periods of ``period_days`` days repeating from ``starts_at`` (default: the
    start of today, UTC). ``stop_running`` (hard budgets only): at 100 % the costs task cancels
    the scope's running work. Lowering a budget stops nothing by itself.
    """
    if period is BudgetPeriod.CUSTOM:
        if period_days is None or not 1 <= period_days <= MAX_PERIOD_DAYS:
            raise InvalidInput(f"a custom period is from 1 to {MAX_PERIOD_DAYS} days", field="period_days")
        if starts_at is not None and starts_at.utcoffset() is None:
            raise InvalidInput("the start needs a time zone (e.g. 2026-12-01T00:00:00Z)", field="starts_at")
    elif period_days is not None or starts_at is not None:
        raise InvalidInput("period_days and starts_at are for custom periods only", field="period_days")
    if stop_running and not hard:
        raise InvalidInput("only a hard budget can stop running work", field="stop_running")
    if amount_limit < 0 or amount_limit > MAX_LIMIT or cents(amount_limit) != amount_limit:
        raise InvalidInput(f"amount must be from 0 to {MAX_LIMIT}, to the cent", field="amount")
    if user_id is not None and label is not None:
        raise InvalidInput("a budget is for the organization, one user or one label, not several", field="label")
    org_id = ctx.org_id
    try:
        async with db.transaction(org_id) as conn:
            currency = await costs_repo.currency(conn, org_id=org_id) or "USD"
            budget = await repo.upsert(
                conn,
                org_id=org_id,
                period=period,
                amount_limit=amount_limit,
                currency=currency,
                hard=hard,
                user_id=user_id,
                label_key=label[0] if label else None,
                label_value=label[1] if label else None,
                period_days=period_days,
                period_anchor=starts_at,
                stop_running=stop_running,
            )
            await events.record(
                conn,
                ctx,
                "organization",
                org_id,
                "budget.set",
                {
                    "budget_id": str(budget.id),
                    "amount": str(amount_limit),
                    "period": period.value,
                    "period_days": period_days,
                    "hard": hard,
                    "stop_running": stop_running,
                },
            )
            return budget
    except asyncpg.ForeignKeyViolationError:
        raise NotFound(f"user {user_id} not found") from None


async def list_budgets(db: Database, ctx: TenantContext) -> list[BudgetState]:
    async with db.transaction(ctx.org_id) as conn:
        return await repo.states(conn, org_ids=[ctx.org_id], hard_only=False, outstanding_statuses=ADMISSION_STATUSES)


async def delete_budget(db: Database, ctx: TenantContext, budget_id: UUID) -> Budget:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        budget = found(await repo.delete(conn, org_id=org_id, budget_id=budget_id), f"budget {budget_id}")
        await events.record(conn, ctx, "organization", org_id, "budget.deleted", {"budget_id": str(budget_id)})
        return budget


async def admit(
    conn: Connection,
    org_id: UUID,
    *,
    user_id: UUID | None,
    labels: Mapping[str, str],
    estimate: Decimal | None,
    placing: UUID | None = None,
) -> None:
    """Refuse work a hard budget has no room for (BudgetExceeded, 402), in the caller's transaction.

    The budget rows stay locked until that transaction commits, so concurrent submissions are
    judged one after the other, each seeing the estimates of those admitted before it.
    ``placing``: the job is being placed (``allocate_gpu``), judged against work that holds resources.
    """
    states = await repo.states(
        conn,
        org_ids=[org_id],
        hard_only=True,
        outstanding_statuses=PLACEMENT_STATUSES if placing else ADMISSION_STATUSES,
        lock=True,
        exclude_job=placing,
    )
    blocked = first_block(states, user_id, labels, estimate)
    if blocked is None:
        return
    b = blocked.budget
    spent = cents(blocked.spent + blocked.outstanding)
    raise BudgetExceeded(
        f"{blocked.reason(estimate)}: the {b.scope} budget of {cents(b.amount_limit)} {b.currency} per "
        f"{b.period_name} has {cents(blocked.remaining)} left. Raise it (gpufleet budgets set) or wait for the next "
        f"{b.period_name}.",
        budget_id=str(b.id),
        budget=str(cents(b.amount_limit)),
        spent=str(spent),
        remaining=str(cents(blocked.remaining)),
        estimate=str(cents(estimate)) if estimate is not None else None,
        currency=b.currency,
        period=b.period.value,
    )


async def check_thresholds(db: Database) -> int:
    """Emit ``budget.threshold`` for every threshold a budget's period spend crossed; once each."""
    emitted = 0
    async with db.system_transaction() as conn:
        states = await repo.states(
            conn, org_ids=None, hard_only=False, outstanding_statuses=(), lock=True, skip_locked=True
        )
        for s in states:
            b = s.budget
            done = s.alerted_pct if s.alerted_period_start == s.period_start else 0
            pct = (100 if s.spent > 0 else 0) if b.amount_limit == 0 else int(s.spent * 100 / b.amount_limit)
            crossed = [t for t in THRESHOLDS if done < t <= pct]
            for t in crossed:
                await events.append(
                    conn,
                    b.organization_id,
                    "organization",
                    b.organization_id,
                    THRESHOLD_EVENT,
                    {
                        "budget_id": str(b.id),
                        "threshold_pct": t,
                        "spent": str(cents(s.spent)),
                        "budget": str(cents(b.amount_limit)),
                        "currency": b.currency,
                        "period": b.period.value,
                        "period_days": b.period_days,
                        "period_start": s.period_start.isoformat(),
                        "scope": b.scope,
                        "hard": b.hard,
                    },
                    actor="costs",
                )
                emitted += 1
            if crossed:
                await repo.mark_alerted(conn, budget_id=b.id, period_start=s.period_start, pct=crossed[-1])
    return emitted
