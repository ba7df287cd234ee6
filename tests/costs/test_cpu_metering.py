"""Jobs without GPUs pay for the host CPU and RAM they hold, metered like allocations: a row per
accounting interval, closed hourly and at release, each attempt once (database clock, backdated)."""

from __future__ import annotations

import itertools
from decimal import Decimal
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.costs import cents
from gpufleet.repo import costs as costs_repo
from gpufleet.services import budgets, job_views
from gpufleet.services import costs as costs_service
from gpufleet.services import jobs as jobs_service
from tests.factories import create_host, create_org, ctx_for, recent_budget_period
from tests.scheduling.helpers import scheduler, submit

A100 = ("A100-80GB", 81920)


async def _prices_and_backdate(db: Database, org_id: UUID, minutes: int, *, attempt: int = 1) -> None:
    """CPU 0.04/core-hour for a day, then 0.10 from 60 minutes ago; RAM 0.01/GiB-hour; holdings since ``minutes`` ago."""
    async with db.system_transaction() as conn:
        await conn.execute(
            """update cpu_reservations set created_at = now() - make_interval(mins => $2)
                where organization_id = $1 and attempt = $3""",
            org_id,
            minutes,
            attempt,
        )
        await conn.execute(
            """update allocations set created_at = now() - make_interval(mins => $2)
                where organization_id = $1 and attempt = $3""",
            org_id,
            minutes,
            attempt,
        )
        if attempt == 1:
            await conn.execute(
                """insert into gpu_prices (organization_id, kind, gpu_model, hourly_price, effective_from) values
                       ($1, 'gpu', 'A100-80GB', 2.00, now() - interval '1 day'),
                       ($1, 'cpu', null, 0.04, now() - interval '1 day'),
                       ($1, 'cpu', null, 0.10, now() - interval '60 minutes'),
                       ($1, 'ram', null, 0.01, now() - interval '1 day')""",
                org_id,
            )


async def _rows(db: Database, job_id: UUID) -> list[dict[str, object]]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch(
            """select period_start, period_end, attempt, gpu_model, gpu_milli, gpu_seconds, cpu_milli, ram_mb, amount
                 from cost_tracking where job_id = $1 order by attempt, period_start""",
            job_id,
        )
    return [dict(r) for r in rows]


async def test_a_cpu_only_job_is_metered_hourly_and_at_release_to_the_cent(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,))
    cpu_job = await submit(db, org.id, gpu_count=0, gpu_milli=0, cpu_milli=4000, ram_mb=8192)
    gpu_job = await submit(db, org.id, gpu_count=1, cpu_milli=2000, ram_mb=4096)
    assert (await scheduler(db).run_once()).placed == 2
    await _prices_and_backdate(db, org.id, 150)

    async with db.system_transaction() as conn:
        assert await costs_repo.close_intervals(conn) == 2  # the allocation and the CPU reservation
        assert await costs_repo.close_intervals(conn) == 0
    # cpu job: 4 cores x (1.5 h x 0.04 + 1 h x 0.10) = 0.64; 8 GiB x 2.5 h x 0.01 = 0.20
    # gpu job: 2.5 h x 2.00 = 5.00; 2 cores x (0.06 + 0.10) = 0.32; 4 GiB x 2.5 h x 0.01 = 0.10
    async with db.transaction(org.id) as conn:
        live = await costs_repo.job_costs(conn, org_id=org.id, job_ids=[cpu_job, gpu_job])
        # the set-based live path equals the segment function the release will write with
        by_function = await conn.fetchval(
            """select sum(s.amount) + (select sum(c.amount) from cost_tracking c where c.job_id = $1)
                 from cpu_reservations r, lateral gpufleet_reservation_cost_segments(r, r.metered_until, now()) s
                where r.job_id = $1""",
            cpu_job,
        )
    assert by_function == live[cpu_job]
    assert (cents(live[cpu_job]), cents(live[gpu_job])) == (Decimal("0.84"), Decimal("5.42"))
    shown = await job_views.get(db, ctx_for(org.id), cpu_job)
    assert shown.cost is not None and cents(shown.cost) == Decimal("0.84")

    usage, _, _ = await costs_service.usage(db, ctx_for(org.id), by="job", since="1d")
    assert {u.key: cents(u.cost) for u in usage} == {str(cpu_job): Decimal("0.84"), str(gpu_job): Decimal("5.42")}
    await budgets.set_budget(db, ctx_for(org.id), amount_limit=Decimal("100"), **recent_budget_period())
    (state,) = await budgets.list_budgets(db, ctx_for(org.id))
    assert cents(state.spent) == Decimal("6.26")

    await jobs_service.cancel(db, ctx_for(org.id), cpu_job)
    rows = await _rows(db, cpu_job)
    assert all(a["period_end"] == b["period_start"] for a, b in itertools.pairwise(rows))
    assert {(r["gpu_model"], r["gpu_milli"], r["gpu_seconds"], r["cpu_milli"], r["ram_mb"]) for r in rows} == {
        (None, 0, Decimal(0), 4000, 8192)
    }
    assert cents(sum((r["amount"] for r in rows), Decimal(0))) == Decimal("0.84")  # type: ignore[misc]
    async with db.transaction(org.id) as conn:
        after = await costs_repo.job_costs(conn, org_id=org.id, job_ids=[cpu_job])
        assert await costs_repo.close_intervals(conn) == 0
    assert after[cpu_job] == sum((r["amount"] for r in rows), Decimal(0))  # type: ignore[misc]


async def test_a_requeued_cpu_only_job_pays_each_attempt_once(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,))
    job = await submit(db, org.id, gpu_count=0, gpu_milli=0, cpu_milli=1000, ram_mb=1024)
    assert (await scheduler(db).run_once()).placed == 1
    await _prices_and_backdate(db, org.id, 120)
    async with db.system_transaction() as conn:  # host lost: the job goes back to the queue
        await conn.execute("update jobs set status = 'pending', attempt = attempt + 1 where id = $1", job)
    assert (await scheduler(db).run_once()).placed == 1
    await _prices_and_backdate(db, org.id, 30, attempt=2)
    await jobs_service.cancel(db, ctx_for(org.id), job)
    rows = await _rows(db, job)
    assert {r["attempt"] for r in rows} == {1, 2}
    # attempt 1: 1 core x (1 h x 0.04 + 1 h x 0.10) + 1 GiB x 2 h x 0.01 = 0.16; attempt 2: 0.5 h x (0.10 + 0.01)
    by_attempt = {a: cents(sum((r["amount"] for r in rows if r["attempt"] == a), Decimal(0))) for a in (1, 2)}
    assert by_attempt == {1: Decimal("0.16"), 2: Decimal("0.06")}  # 0.055 rounds half up


async def test_a_move_to_another_host_within_an_attempt_meters_both_holdings(db: Database) -> None:
    org = await create_org(db)
    for _ in range(2):
        await create_host(db, org.id, gpus_spec=(A100,))
    job = await submit(db, org.id, gpu_count=0, gpu_milli=0, cpu_milli=1000, ram_mb=1024)
    assert (await scheduler(db).run_once()).placed == 1
    await _prices_and_backdate(db, org.id, 90)
    async with db.system_transaction() as conn:
        other = await conn.fetchval(
            "select h.id from hosts h, jobs j where j.id = $1 and h.organization_id = j.organization_id and h.id <> j.host_id",
            job,
        )
        await conn.execute("update jobs set host_id = $2 where id = $1", job, other)
        await conn.execute(
            "update cpu_reservations set created_at = now() - interval '30 minutes' where released_at is null"
        )
        held = await conn.fetch(
            "select host_id, released_at is null as held from cpu_reservations where job_id = $1", job
        )
    assert sorted((r["host_id"] == other, r["held"]) for r in held) == [(False, False), (True, True)]
    await jobs_service.cancel(db, ctx_for(org.id), job)
    rows = await _rows(db, job)
    # first host: 30 min x 0.04 + 1 h x 0.10 + 1.5 h x 0.01 = 0.135; second: 0.5 h x (0.10 + 0.01) = 0.055
    assert cents(sum((r["amount"] for r in rows), Decimal(0))) == Decimal("0.19")  # type: ignore[misc]
