"""Prices, metering and usage: the SQL of costs (the metering itself is in 0009_costs.sql).

Jobs without GPUs are metered the same way through their CPU reservation (``cpu_reservations``).

Cost of work = cost rows (closed intervals, written at release and hourly) + what running
allocations accrued since they were last metered, computed on read by the same SQL function
(``gpufleet_cost_segments``), so live numbers and closed ones never overlap.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.costs import Price, PriceKind, UsageRow
from gpufleet.repo.rows import mapper

# The CPU and RAM prices in force for allocation ``a`` (ch, rh: its host's; c0, r0: the organization's
# default), for the jobs with GPUs and those without.
_CPU_RAM_PRICES = """\
           left join cur ch on ch.organization_id = a.organization_id and ch.kind = 'cpu' and ch.host_id = a.host_id
           left join cur c0 on c0.organization_id = a.organization_id and c0.kind = 'cpu' and c0.host_id is null
           left join cur rh on rh.organization_id = a.organization_id and rh.kind = 'ram' and rh.host_id = a.host_id
           left join cur r0 on r0.organization_id = a.organization_id and r0.kind = 'ram' and r0.host_id is null"""

# What running allocations of the organizations $1 accrued since they were last metered, up to
# now (never stored). An allocation whose open interval crosses no hour boundary and no price
# change (almost all: the hourly close keeps them short) is one segment, computed set-based here
# with gpufleet_cost_segments' formula; the others go through that function.
LIVE = f"""
    select a.organization_id, a.job_id, a.attempt, j.submitted_by as user_id, j.labels, g.model as gpu_model,
           a.host_id, o.s as period_start, round(v.secs * a.milli / 1000, 6) as gpu_seconds,
           round(v.secs * (a.milli * coalesce(gh.hourly_price, g0.hourly_price, 0) / 1000
                           + case when o.carrier
                                  then j.cpu_milli * coalesce(ch.hourly_price, c0.hourly_price, 0) / 1000
                                       + j.ram_mb * coalesce(rh.hourly_price, r0.hourly_price, 0) / 1024
                                  else 0 end)
                 / 3600, 6) as amount
      from open o join allocations a on a.id = o.id join jobs j on j.id = a.job_id
           join gpu_resources g on g.id = a.gpu_id
           cross join lateral (select extract(epoch from now() - o.s) as secs) v
           -- no price change since o.s: the price in force then is the one in force now
           left join cur gh on gh.organization_id = a.organization_id and gh.kind = 'gpu'
                           and gh.gpu_model = g.model and gh.host_id = a.host_id
           left join cur g0 on g0.organization_id = a.organization_id and g0.kind = 'gpu'
                           and g0.gpu_model = g.model and g0.host_id is null
{_CPU_RAM_PRICES}
     where o.simple and now() > o.s
    union all
    select s.organization_id, s.job_id, s.attempt, s.user_id, s.labels, s.gpu_model, s.host_id,
           s.period_start, s.gpu_seconds, s.amount
      from open o join allocations a on a.id = o.id,
           lateral gpufleet_cost_segments(a, o.s, now()) s
     where not o.simple
    union all
    -- jobs without GPUs: their CPU and RAM reservation, the same two paths
    select a.organization_id, a.job_id, a.attempt, j.submitted_by, j.labels, null::text, a.host_id, o.s,
           0::numeric,
           round(v.secs * (a.cpu_milli * coalesce(ch.hourly_price, c0.hourly_price, 0) / 1000
                           + a.ram_mb * coalesce(rh.hourly_price, r0.hourly_price, 0) / 1024) / 3600, 6)
      from ropen o join cpu_reservations a on a.id = o.id join jobs j on j.id = a.job_id
           cross join lateral (select extract(epoch from now() - o.s) as secs) v
{_CPU_RAM_PRICES}
     where o.simple and now() > o.s
    union all
    select s.organization_id, s.job_id, s.attempt, s.user_id, s.labels, null::text, s.host_id,
           s.period_start, 0::numeric, s.amount
      from ropen o join cpu_reservations a on a.id = o.id,
           lateral gpufleet_reservation_cost_segments(a, o.s, now()) s
     where not o.simple
"""


def open_cte(where: str = "a.organization_id = any($1::uuid[])") -> str:
    """The CTEs ``open``/``ropen`` (running allocations / CPU reservations matching ``where``, each
    marked simple or not), ``cur`` and ``live``."""
    return OPEN_TEMPLATE.replace("{where}", where)


OPEN_TEMPLATE = (
    """
    open as materialized (
        select a.id, coalesce(a.metered_until, a.created_at) as s,
               -- the attempt's first GPU carries the job's CPU and RAM (as in gpufleet_cost_segments)
               a.gpu_id = first_value(a.gpu_id) over (partition by a.job_id, a.attempt order by a.gpu_id) as carrier,
               date_trunc('hour', coalesce(a.metered_until, a.created_at)) = date_trunc('hour', now())
               and not exists (select 1 from gpu_prices p
                                where p.organization_id = a.organization_id
                                  and p.effective_from > coalesce(a.metered_until, a.created_at)
                                  and p.effective_from <= now()
                                  and (p.host_id is null or p.host_id = a.host_id)) as simple
          from allocations a where a.released_at is null and {where}
    ),
    ropen as materialized (
        select a.id, a.organization_id, coalesce(a.metered_until, a.created_at) as s,
               date_trunc('hour', coalesce(a.metered_until, a.created_at)) = date_trunc('hour', now())
               and not exists (select 1 from gpu_prices p
                                where p.organization_id = a.organization_id and p.kind in ('cpu', 'ram')
                                  and p.effective_from > coalesce(a.metered_until, a.created_at)
                                  and p.effective_from <= now()
                                  and (p.host_id is null or p.host_id = a.host_id)) as simple
          from cpu_reservations a where a.released_at is null and {where}
    ),
    cur as materialized (
        select distinct on (p.organization_id, p.kind, p.gpu_model, p.host_id)
               p.organization_id, p.kind, p.gpu_model, p.host_id, p.hourly_price
          from gpu_prices p
         where p.organization_id in (select a.organization_id from allocations a join open o on o.id = a.id
                                     union select o.organization_id from ropen o)
           and p.effective_from <= now()
         order by p.organization_id, p.kind, p.gpu_model, p.host_id, p.effective_from desc
    ),
    live as materialized ("""
    + LIVE
    + """)"""
)
OPEN = open_cte()

# Every cost since $2 of the organizations $1: closed rows plus the live part of running work.
COSTS = f"""
    with {OPEN}
    select c.organization_id, c.job_id, c.attempt, c.user_id, c.labels, c.gpu_model, c.host_id,
           c.period_start, c.gpu_seconds, c.amount
      from cost_tracking c where c.organization_id = any($1::uuid[]) and c.period_start >= $2
    union all
    select * from live where period_start >= $2
"""

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


_price = mapper(Price, kind=PriceKind)


async def add_price(
    conn: Conn,
    *,
    org_id: UUID,
    kind: PriceKind,
    gpu_model: str | None,
    host_id: UUID | None,
    hourly_price: Decimal,
    currency: str,
    effective_from: datetime | None,
    set_by: str | None,
) -> Price:
    """A price change from ``effective_from`` (None: now, by the database clock); history stays.

    Setting the same key at the same instant again replaces that change (idempotent PUT).
    """
    row = await conn.fetchrow(
        """insert into gpu_prices (organization_id, kind, gpu_model, host_id, hourly_price, currency,
                                   effective_from, set_by)
           values ($1, $2, $3, $4, $5, $6, coalesce($7, now()), $8)
           on conflict (organization_id, kind, coalesce(gpu_model, ''),
                        coalesce(host_id, '00000000-0000-0000-0000-000000000000'::uuid), effective_from)
           do update set hourly_price = excluded.hourly_price, currency = excluded.currency, set_by = excluded.set_by
        returning *, effective_from <= now() as current""",
        org_id,
        kind.value,
        gpu_model,
        host_id,
        hourly_price,
        currency,
        effective_from,
        set_by,
    )
    assert row is not None
    return _price(row)


async def list_prices(conn: Conn, *, org_id: UUID, history: bool = False) -> list[Price]:
    """Prices in force now and changes still to come; with ``history``, superseded ones too."""
    rows = await conn.fetch(
        """select p.*, p.id = (select q.id from gpu_prices q
                                where q.organization_id = p.organization_id and q.kind = p.kind
                                  and q.gpu_model is not distinct from p.gpu_model
                                  and q.host_id is not distinct from p.host_id and q.effective_from <= now()
                                order by q.effective_from desc limit 1) as current
             from gpu_prices p where p.organization_id = $1
            order by p.kind, p.gpu_model nulls first, p.host_id nulls first, p.effective_from""",
        org_id,
    )
    prices = [_price(r) for r in rows]
    if history:
        return prices
    now = await conn.fetchval("select now()")
    return [p for p in prices if p.current or p.effective_from > now]


async def currency(conn: Conn, *, org_id: UUID) -> str | None:
    """The organization's currency: that of its prices (one currency per organization)."""
    value = await conn.fetchval(
        "select currency from gpu_prices where organization_id = $1 order by effective_from desc limit 1", org_id
    )
    return str(value) if value is not None else None


async def current_rates(conn: Conn, *, org_id: UUID) -> tuple[dict[str, Decimal], Decimal, Decimal]:
    """Prices in force now: the dearest per GPU model (over hosts), the CPU core-hour and GiB-hour."""
    rows = await conn.fetch(
        """select distinct on (kind, gpu_model, host_id) kind, gpu_model, hourly_price from gpu_prices
            where organization_id = $1 and effective_from <= now()
            order by kind, gpu_model, host_id, effective_from desc""",
        org_id,
    )
    gpu: dict[str, Decimal] = {}
    cpu = ram = Decimal(0)
    for r in rows:
        if r["kind"] == "gpu":
            gpu[r["gpu_model"]] = max(gpu.get(r["gpu_model"], Decimal(0)), r["hourly_price"])
        elif r["kind"] == "cpu":
            cpu = max(cpu, r["hourly_price"])
        else:
            ram = max(ram, r["hourly_price"])
    return gpu, cpu, ram


async def close_intervals(conn: Conn, *, limit: int = 1_000_000) -> int:
    """Write the cost rows of running work up to the last full hour (system path), for at most
    ``limit`` allocations and CPU reservations (allocations first); returns how many were closed."""
    n = int(await conn.fetchval("select gpufleet_close_cost_intervals(date_trunc('hour', now()), $1)", limit))
    if n < limit:
        n += int(
            await conn.fetchval("select gpufleet_close_reservation_intervals(date_trunc('hour', now()), $1)", limit - n)
        )
    return n


_GROUPS: dict[str, tuple[str, str]] = {
    # by -> (key expression, readable name expression)
    "day": ("to_char(c.period_start at time zone 'UTC', 'YYYY-MM-DD')", "null"),
    "user": ("c.user_id::text", "(select u.email from users u where u.id = c.user_id)"),
    "job": ("c.job_id::text", "(select j.name from jobs j where j.id = c.job_id)"),
    "model": ("c.gpu_model", "null"),
    "host": ("c.host_id::text", "(select h.name from hosts h where h.id = c.host_id)"),
}


async def usage(conn: Conn, *, org_id: UUID, by: str, since: datetime) -> list[UsageRow]:
    """GPU-hours and cost per group since ``since`` (``by``: a key of _GROUPS or ``label:KEY``)."""
    params: list[Any] = [[org_id], since]
    if by.startswith("label:"):
        params.append(by.removeprefix("label:"))
        key, name = "c.labels ->> $3", "null"
    else:
        key, name = _GROUPS[by]
    rows = await conn.fetch(
        f"""select k as key, min(n) as name, sum(gpu_seconds) / 3600 as gpu_hours, sum(amount) as cost
              from (select {key} as k, {name} as n, c.gpu_seconds, c.amount from ({COSTS}) c) g
             group by k order by sum(amount) desc, k nulls last""",
        *params,
    )
    return [
        UsageRow(key=r["key"], name=r["name"], gpu_hours=Decimal(r["gpu_hours"]), cost=Decimal(r["cost"])) for r in rows
    ]


async def job_money(conn: Conn, *, org_id: UUID, job_ids: list[UUID]) -> dict[UUID, tuple[Decimal, Decimal | None]]:
    """Each job's (cost so far over all attempts: closed rows + live accrual, its estimate)."""
    if not job_ids:
        return {}
    rows = await conn.fetch(
        f"""with {open_cte("a.organization_id = ($1::uuid[])[1] and a.job_id = any($2::uuid[])")}
            select j.id, j.cost_estimate,
                   coalesce((select sum(c.amount) from cost_tracking c
                              where c.organization_id = ($1::uuid[])[1] and c.job_id = j.id), 0)
                   + coalesce((select sum(l.amount) from live l where l.job_id = j.id), 0) as cost
              from jobs j where j.organization_id = ($1::uuid[])[1] and j.id = any($2::uuid[])""",
        [org_id],
        job_ids,
    )
    return {r["id"]: (Decimal(r["cost"]), r["cost_estimate"]) for r in rows}


async def job_costs(conn: Conn, *, org_id: UUID, job_ids: list[UUID]) -> dict[UUID, Decimal]:
    """Each job's cost so far, all attempts (closed rows + live accrual)."""
    money = await job_money(conn, org_id=org_id, job_ids=job_ids)
    return {j: money[j][0] if j in money else Decimal(0) for j in job_ids}


async def db_now(conn: Conn) -> datetime:
    """The database clock (the transaction's start): every cost is judged by it."""
    value: datetime = await conn.fetchval("select now()")
    return value


async def host_exists(conn: Conn, *, org_id: UUID, host_id: UUID) -> bool:
    return bool(await conn.fetchval("select 1 from hosts where organization_id = $1 and id = $2", org_id, host_id))
