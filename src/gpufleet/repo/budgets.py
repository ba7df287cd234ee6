"""Budgets: their rows, and what each period has spent and what unfinished work may still spend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.costs import Budget, BudgetPeriod, BudgetState
from gpufleet.repo.costs import OPEN
from gpufleet.repo.rows import Table, from_row, mapper

_NIL = "00000000-0000-0000-0000-000000000000"


budget_of = mapper(Budget, period=BudgetPeriod, hard=from_row(lambda r: r["action"] == "block"))
_budgets = Table("budgets", budget_of)


async def upsert(
    conn: Conn,
    *,
    org_id: UUID,
    period: BudgetPeriod,
    amount_limit: Decimal,
    currency: str,
    hard: bool,
    user_id: UUID | None,
    label_key: str | None,
    label_value: str | None,
    period_days: int | None = None,
    period_anchor: datetime | None = None,
    stop_running: bool = False,
) -> Budget:
    """Set the budget of this scope and period, replacing any previous one (one custom period per scope)."""
    row = await conn.fetchrow(
        f"""insert into budgets (organization_id, period, amount_limit, currency, action, user_id,
                                 label_key, label_value, period_days, period_anchor, stop_running)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                    case when $9::integer is not null then coalesce($10, date_trunc('day', now(), 'UTC')) end, $11)
            on conflict (organization_id, period, coalesce(user_id, '{_NIL}'::uuid), coalesce(label_key, ''),
                         coalesce(label_value, ''))
            do update set amount_limit = excluded.amount_limit, currency = excluded.currency,
                          action = excluded.action, period_days = excluded.period_days,
                          period_anchor = excluded.period_anchor, stop_running = excluded.stop_running,
                          updated_at = now()
         returning *""",
        org_id,
        period.value,
        amount_limit,
        currency,
        "block" if hard else "warn",
        user_id,
        label_key,
        label_value,
        period_days,
        period_anchor,
        stop_running,
    )
    assert row is not None
    return budget_of(row)


async def delete(conn: Conn, *, org_id: UUID, budget_id: UUID) -> Budget | None:
    return await _budgets.delete(conn, org_id, budget_id)


async def states(
    conn: Conn,
    *,
    org_ids: Sequence[UUID] | None,
    hard_only: bool,
    outstanding_statuses: Sequence[str],
    lock: bool = False,
    skip_locked: bool = False,
    exclude_job: UUID | None = None,
) -> list[BudgetState]:
    """Budgets of ``org_ids`` (None: every organization, system path) with their period's spend.

    ``lock`` takes the budget rows FOR UPDATE in id order: the serialisation point of every
    decision that spends a budget (admission, placement), so two of them never both see the
    same remaining amount. ``outstanding_statuses``: which unfinished jobs reserve their
    estimate (admission counts pending ones too; placement only those holding resources).
    ``exclude_job``: the job being judged, not counted among them.
    """
    lock_sql = (" for update skip locked" if skip_locked else " for update") if lock else ""
    rows = await conn.fetch(
        f"""select b.*, gpufleet_budget_start(b.period, b.period_days, b.period_anchor, now()) as window_start
              from budgets b
             where ($1::uuid[] is null or b.organization_id = any($1::uuid[])) and (not $2 or b.action = 'block')
             order by b.id{lock_sql}""",
        list(org_ids) if org_ids is not None else None,
        hard_only,
    )
    if not rows:
        return []
    orgs = sorted({r["organization_id"] for r in rows})
    since = min(r["window_start"] for r in rows)
    found = await conn.fetch(
        f"""with {OPEN},
                 b as (select b.id, b.organization_id, b.user_id, b.label_key, b.label_value,
                              gpufleet_budget_start(b.period, b.period_days, b.period_anchor, now()) as w
                         from budgets b where b.id = any($3::uuid[])),
                 c as (select c.organization_id, c.user_id, c.labels, c.period_start, c.amount
                         from cost_tracking c where c.organization_id = any($1::uuid[]) and c.period_start >= $2
                       union all
                       select l.organization_id, l.user_id, l.labels, l.period_start, l.amount
                         from live l where l.period_start >= $2),
                 spent as (select b.id, sum(c.amount) as amount from b join c on c.organization_id = b.organization_id
                              and c.period_start >= b.w
                              and (b.user_id is null or c.user_id = b.user_id)
                              and (b.label_key is null or c.labels ->> b.label_key = b.label_value)
                            group by b.id),
                 j as (select j.id, j.organization_id, j.submitted_by, j.labels, j.attempt, j.cost_estimate
                         from jobs j
                        where j.organization_id = any($1::uuid[]) and j.status = any($4::text[])
                          and j.cost_estimate > 0 and j.id is distinct from $5),
                 jc as materialized (select x.job_id, sum(x.amount) as amount from (
                            select c.job_id, c.amount
                              from cost_tracking c join j on j.id = c.job_id and j.attempt = c.attempt
                            union all
                            select l.job_id, l.amount from live l join j on j.id = l.job_id and j.attempt = l.attempt
                        ) x group by x.job_id),
                 outstanding as (select b.id, sum(greatest(j.cost_estimate - coalesce(jc.amount, 0), 0)) as amount
                                   from b join j on j.organization_id = b.organization_id
                                    and (b.user_id is null or j.submitted_by = b.user_id)
                                    and (b.label_key is null or j.labels ->> b.label_key = b.label_value)
                                   left join jc on jc.job_id = j.id
                                  group by b.id)
            select b.id, coalesce(spent.amount, 0) as spent, coalesce(outstanding.amount, 0) as outstanding
              from b left join spent on spent.id = b.id left join outstanding on outstanding.id = b.id""",
        orgs,
        since,
        [r["id"] for r in rows],
        list(outstanding_statuses),
        exclude_job,
    )
    spent = {r["id"]: Decimal(r["spent"]) for r in found}
    outstanding = {r["id"]: Decimal(r["outstanding"]) for r in found}
    return [
        BudgetState(
            budget=budget_of(r),
            period_start=r["window_start"],
            spent=spent.get(r["id"], Decimal(0)),
            outstanding=outstanding.get(r["id"], Decimal(0)),
            alerted_period_start=r["alerted_period_start"],
            alerted_pct=r["alerted_pct"],
        )
        for r in rows
    ]


async def mark_alerted(conn: Conn, *, budget_id: UUID, period_start: datetime, pct: int) -> None:
    await conn.execute(
        "update budgets set alerted_period_start = $2, alerted_pct = $3 where id = $1", budget_id, period_start, pct
    )


async def running_jobs_in_scope(conn: Conn, *, budget: Budget) -> list[UUID]:
    """Jobs holding resources in a budget's scope that nobody asked to stop yet (system path)."""
    rows = await conn.fetch(
        """select id from jobs
            where organization_id = $1 and status in ('allocated', 'running') and cancel_requested_at is null
              and ($2::uuid is null or submitted_by = $2) and ($3::text is null or labels ->> $3 = $4)
            order by id""",
        budget.organization_id,
        budget.user_id,
        budget.label_key,
        budget.label_value,
    )
    return [r["id"] for r in rows]
