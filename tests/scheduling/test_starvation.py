"""Backfill keeps GPUs busy; a job waiting past starvation_after_s gets a host held until it fits."""

from __future__ import annotations

import random

from gpufleet.db.pool import Database
from tests.factories import create_host, create_org
from tests.scheduling.helpers import assert_clean, scheduler, status_of, submit


async def _finish_one(db: Database, rng: random.Random) -> None:
    async with db.system_transaction() as conn:
        running = await conn.fetch(
            "select id from jobs where status = 'allocated' and gpu_count = 1 order by allocated_at, id"
        )
        victim = rng.choice(running)["id"]
        await conn.execute("update jobs set status = 'running' where id = $1", victim)
        await conn.execute("update jobs set status = 'succeeded' where id = $1", victim)


async def _hosts_of_new(db: Database, since_ids: set[object]) -> set[object]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch("select id, host_id from jobs where status = 'allocated' and gpu_count = 1")
    return {r["host_id"] for r in rows if r["id"] not in since_ids}


async def test_large_head_job_runs_under_a_stream_of_small_jobs(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, name="h-a")
    await create_host(db, org.id, name="h-b")
    await create_host(db, org.id, name="h-c", gpus_spec=(("A100-80GB", 81920),) * 4)  # the only 4-GPU host
    sched = scheduler(db, scheduler_starvation_after_s=300)
    for _ in range(8):
        await submit(db, org.id)
    assert (await sched.run_once()).placed == 8  # every GPU busy
    big = await submit(db, org.id, gpu_count=4, priority=0)
    rng = random.Random(7)

    # Before it has waited long: pure backfill, small jobs take every freed GPU.
    for _ in range(6):
        await _finish_one(db, rng)
        await submit(db, org.id)
        result = await sched.run_once()
        assert result.placed == 1
    status, reason, _ = await status_of(db, big)
    assert status == "pending" and reason and "held" not in reason

    # It has now waited past starvation_after_s (backdated: no sleeping).
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set queued_at = now() - interval '10 minutes' where id = $1", big)
        host_c = await conn.fetchval("select id from hosts where name = 'h-c'")
    rounds = 0
    while (await status_of(db, big))[0] == "pending":
        rounds += 1
        assert rounds <= 40, "the large job starved"
        async with db.system_transaction() as conn:
            before = {r["id"] for r in await conn.fetch("select id from jobs where status = 'allocated'")}
        await _finish_one(db, rng)
        await submit(db, org.id)
        await sched.run_once()
        if (await status_of(db, big))[0] == "pending":
            reason = (await status_of(db, big))[1] or ""
            assert "host h-c is held for this job" in reason
            # backfill continues, but never on the held host
            assert host_c not in await _hosts_of_new(db, before)
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select host_id from jobs where id = $1", big) == host_c
        small_waiting = await conn.fetchval("select count(*) from jobs where status = 'pending'")
    assert small_waiting >= 1  # the stream was really held back while the host drained
    await assert_clean(db)
