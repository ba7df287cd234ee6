"""Metering on a real database: exact to the cent across a price change, on whole and fractional
GPUs, closed hourly and at release, never counted twice (database clock; timestamps backdated)."""

from __future__ import annotations

import itertools
from decimal import Decimal
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.costs import cents
from gpufleet.repo import costs as costs_repo
from gpufleet.services import jobs as jobs_service
from tests.factories import create_host, create_org, ctx_for
from tests.scheduling.helpers import scheduler, submit

A100 = ("A100-80GB", 81920)


async def _backdate(db: Database, org_id: UUID, minutes: int) -> None:
    """Allocations made ``minutes`` ago; the A100 price 2.00 for a day, then 3.00 from 60 minutes ago."""
    async with db.system_transaction() as conn:
        await conn.execute(
            "update allocations set created_at = now() - make_interval(mins => $2) where organization_id = $1",
            org_id,
            minutes,
        )
        await conn.execute(
            """insert into gpu_prices (organization_id, kind, gpu_model, hourly_price, effective_from) values
                   ($1, 'gpu', 'A100-80GB', 2.00, now() - interval '1 day'),
                   ($1, 'gpu', 'A100-80GB', 3.00, now() - interval '60 minutes'),
                   ($1, 'cpu', null, 0.04, now() - interval '1 day'),
                   ($1, 'ram', null, 0.01, now() - interval '1 day')""",
            org_id,
        )


async def _rows(db: Database, job_id: UUID) -> list[dict[str, object]]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch(
            """select c.period_start, c.period_end, c.gpu_milli, c.hourly_price, c.cpu_milli, c.ram_mb,
                      c.cpu_hourly_price, c.ram_hourly_price, c.amount, c.attempt
                 from cost_tracking c where c.job_id = $1 order by c.period_start, c.gpu_id""",
            job_id,
        )
    return [dict(r) for r in rows]


def _expected(rows: list[dict[str, object]]) -> Decimal:
    """The hand computation, per row, in Decimal: seconds x (share x GPU + cores x CPU + GiB x RAM) / 3600."""
    total = Decimal(0)
    for r in rows:
        delta = r["period_end"] - r["period_start"]  # type: ignore[operator]
        secs = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000
        rate = (
            Decimal(r["gpu_milli"]) / 1000 * r["hourly_price"]  # type: ignore[operator]
            + Decimal(r["cpu_milli"]) / 1000 * r["cpu_hourly_price"]  # type: ignore[operator]
            + Decimal(r["ram_mb"]) / 1024 * r["ram_hourly_price"]  # type: ignore[operator]
        )
        amount = (secs * rate / 3600).quantize(Decimal("0.000001"))
        assert amount == r["amount"], r
        total += amount
    return total


async def test_cost_is_exact_to_the_cent_across_a_price_change(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100, A100))
    whole = await submit(db, org.id, gpu_count=1, cpu_milli=2000, ram_mb=4096)
    quarter = await submit(db, org.id, gpu_milli=250)
    assert (await scheduler(db).run_once()).placed == 2
    await _backdate(db, org.id, 150)

    # Running: the hourly close writes whole hours; the rest is accrued live, never both.
    async with db.system_transaction() as conn:
        assert await costs_repo.close_intervals(conn) == 2
        assert await costs_repo.close_intervals(conn) == 0  # nothing new to close: idempotent
    async with db.transaction(org.id) as conn:
        live = await costs_repo.job_costs(conn, org_id=org.id, job_ids=[whole, quarter])
        # the set-based live path equals the segment function the release will write with
        by_function = await conn.fetch(
            """select a.job_id, sum(s.amount) + (select sum(c.amount) from cost_tracking c where c.job_id = a.job_id)
                 from allocations a, lateral gpufleet_cost_segments(a, a.metered_until, now()) s
                where a.released_at is null group by a.job_id"""
        )
    assert dict((r[0], r[1]) for r in by_function) == live
    assert cents(live[whole]) == Decimal("6.30") and cents(live[quarter]) == Decimal("1.50")

    for job in (whole, quarter):
        await jobs_service.cancel(db, ctx_for(org.id), job)
    whole_rows, quarter_rows = await _rows(db, whole), await _rows(db, quarter)
    # whole: 1.5 h x 2.00 + 1 h x 3.00 = 6.00, 2 cores x 2.5 h x 0.04 = 0.20, 4 GiB x 2.5 h x 0.01 = 0.10
    assert cents(_expected(whole_rows)) == Decimal("6.30")
    # quarter: 0.25 x (1.5 h x 2.00 + 1 h x 3.00) = 1.50
    assert cents(_expected(quarter_rows)) == Decimal("1.50")
    # cut at every hour boundary and at the price change, no gaps and no overlaps
    for rows in (whole_rows, quarter_rows):
        assert len(rows) >= 4
        assert all(a["period_end"] == b["period_start"] for a, b in itertools.pairwise(rows))
        assert {r["hourly_price"] for r in rows} == {Decimal("2.0000"), Decimal("3.0000")}
    async with db.transaction(org.id) as conn:
        after = await costs_repo.job_costs(conn, org_id=org.id, job_ids=[whole, quarter])
        assert await costs_repo.close_intervals(conn) == 0
    assert after == {whole: _expected(whole_rows), quarter: _expected(quarter_rows)}


async def test_each_attempt_pays_for_what_it_held_and_nothing_twice(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,))
    job = await submit(db, org.id)
    assert (await scheduler(db).run_once()).placed == 1
    await _backdate(db, org.id, 120)
    async with db.system_transaction() as conn:  # host lost: the job goes back to the queue
        await conn.execute("update jobs set status = 'pending', attempt = attempt + 1 where id = $1", job)
    assert (await scheduler(db).run_once()).placed == 1
    async with db.system_transaction() as conn:
        await conn.execute(
            """update allocations set created_at = now() - interval '30 minutes'
                where job_id = $1 and attempt = 2""",
            job,
        )
    await jobs_service.cancel(db, ctx_for(org.id), job)
    rows = await _rows(db, job)
    assert {r["attempt"] for r in rows} == {1, 2}
    # attempt 1: 1 h x 2.00 + 1 h x 3.00; attempt 2: 0.5 h x 3.00
    assert cents(_expected(rows)) == Decimal("6.50")
