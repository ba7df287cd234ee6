"""Pending reasons on a busy fleet: a reason whose counts alone moved is not rewritten every cycle."""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.services import quotas as quotas_service
from tests.factories import create_host, create_org, ctx_for
from tests.scheduling.helpers import assert_clean, scheduler, status_of, submit

T4 = ("T4", 15360)


async def _finish(db: Database, job_id: UUID) -> None:
    async with db.system_transaction() as conn:  # the agent's start and exit reports
        await conn.execute("update jobs set status = 'running', started_at = now() where id = $1", job_id)
        await conn.execute(
            "update jobs set status = 'succeeded', finished_at = now(), exit_code = 0 where id = $1", job_id
        )


async def test_counts_alone_wait_for_the_refresh_a_new_meaning_is_written_at_once(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(T4,) * 4)
    await quotas_service.set_quota(db, ctx_for(org.id), gpu_model=None, max_gpus=3)
    first = await submit(db, org.id, gpu_count=1, priority=10)
    await submit(db, org.id, gpu_count=1, priority=10)
    waiter = await submit(db, org.id, gpu_count=3)
    sched = scheduler(db)
    assert (await sched.run_once()).placed == 2
    assert (await status_of(db, waiter))[1] == "quota: 2 of 3 GPUs in use, this job needs 3"

    await _finish(db, first)  # only the count moves: "1 of 3"
    result = await sched.run_once()
    assert result.placed == 0 and result.reasons_written == 0
    assert (await status_of(db, waiter))[1] == "quota: 2 of 3 GPUs in use, this job needs 3"
    # another scheduler (a new leader) knows nothing of recent writes: it writes the current count
    other = await scheduler(db).run_once()
    assert other.reasons_written == 1
    assert (await status_of(db, waiter))[1] == "quota: 1 of 3 GPUs in use, this job needs 3"

    await submit(db, org.id, gpu_count=2, priority=10)  # the quota is now used up: a new reason
    result = await sched.run_once()
    assert result.placed == 1 and result.reasons_written == 1
    assert (await status_of(db, waiter))[1] == "quota: 3 of 3 GPUs in use"
    await assert_clean(db)


async def test_a_refresh_of_zero_writes_every_change(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(T4,) * 4)
    await quotas_service.set_quota(db, ctx_for(org.id), gpu_model=None, max_gpus=3)
    first = await submit(db, org.id, gpu_count=1, priority=10)
    await submit(db, org.id, gpu_count=1, priority=10)
    waiter = await submit(db, org.id, gpu_count=3)
    sched = scheduler(db, scheduler_reason_refresh_s=0)
    await sched.run_once()
    await _finish(db, first)
    assert (await sched.run_once()).reasons_written == 1
    assert (await status_of(db, waiter))[1] == "quota: 1 of 3 GPUs in use, this job needs 3"
