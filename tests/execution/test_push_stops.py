"""Stops pushed through the assignment long-poll: a cancel or a fence ends the waiting host's poll at
once with the heartbeat's instruction; nobody else is woken, and a timeout waits for the heartbeat."""

from __future__ import annotations

import asyncio

from gpufleet.background import reaper
from gpufleet.db.pool import Database
from gpufleet.domain.execution import KillInstruction
from gpufleet.services import jobs as jobs_service
from gpufleet.services.assignments import kill_instructions, next_work
from gpufleet.services.wakeups import WakeHub
from tests.execution.helpers import POLICY, add_host, fleet, running, sql
from tests.execution.test_host_loss import SETTINGS as LOSS_SETTINGS
from tests.execution.test_host_loss import lose
from tests.factories import ctx_for


async def test_a_cancel_ends_the_long_poll_of_the_host_that_runs_it_at_once(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    keep = await running(db, org.id, host)
    org2, (other,) = await fleet(db)  # another tenant's host, waiting in the same server process
    elsewhere = await running(db, org2.id, other)
    hub = WakeHub(db, recheck_s=30)  # no re-read for 30 s: only the NOTIFY can end the wait
    await hub.start()
    mine = asyncio.create_task(next_work(db, host, wait_s=25, running=[(job_id, 1), (keep, 1)], hub=hub, policy=POLICY))
    theirs = asyncio.create_task(next_work(db, other, wait_s=25, running=[(elsewhere, 1)], hub=hub, policy=POLICY))
    try:
        await asyncio.sleep(0.3)
        assert not mine.done() and not theirs.done()
        await jobs_service.cancel(db, ctx_for(org.id), job_id)
        work = await asyncio.wait_for(mine, 3)
        assert work.assignments == [] and work.kill == [KillInstruction(job_id, 1, "cancelled", 30.0)]
        # the same instruction as the heartbeat's, judged the same way
        assert work.kill == await kill_instructions(db, host, [(job_id, 1), (keep, 1)], policy=POLICY)
        await asyncio.sleep(0.3)
        assert not theirs.done()  # another host's poll, about other runs, sleeps on
    finally:
        for task in (mine, theirs):
            task.cancel()
        await asyncio.gather(mine, theirs, return_exceptions=True)
        await hub.close()


async def test_a_requeued_attempt_is_fenced_through_the_long_poll(db: Database) -> None:
    org, (old,) = await fleet(db, "node-1", gpus=2)
    job_id = await running(db, org.id, old, gpu_count=2)
    await add_host(db, org.id, "node-2", gpus=2)
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    poll = asyncio.create_task(next_work(db, old, wait_s=25, running=[(job_id, 1)], hub=hub, policy=POLICY))
    try:
        await asyncio.sleep(0.3)
        await lose(db, old, 61)
        assert (await reaper.run_once(db, LOSS_SETTINGS)).requeued == [job_id]
        work = await asyncio.wait_for(poll, 3)
        assert work.kill == [KillInstruction(job_id, 1, "fenced", POLICY.fence_grace_s)]
    finally:
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        await hub.close()


async def test_an_overdue_run_is_left_to_the_heartbeat_and_polls_without_runs_are_unchanged(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, max_runtime_s=60)
    await sql(db, "update jobs set started_at = now() - interval '61 seconds' where id = $1", job_id)
    assert [k.reason for k in await kill_instructions(db, host, [(job_id, 1)], policy=POLICY)] == ["timed_out"]
    work = await next_work(db, host, wait_s=0.2, running=[(job_id, 1)], policy=POLICY)
    assert work.kill == [] and work.assignments == []  # the agent keeps its own clock; the heartbeat says it too
    assert (await next_work(db, host, wait_s=0, policy=POLICY)).kill == []


async def test_behind_a_transaction_pooler_the_polling_hub_pushes_the_stop(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    hub = WakeHub(db, listen=False, poll_s=0.1, recheck_s=30)  # no LISTEN: one polling task
    await hub.start()
    poll = asyncio.create_task(next_work(db, host, wait_s=25, running=[(job_id, 1)], hub=hub, policy=POLICY))
    try:
        await asyncio.sleep(0.3)
        assert not poll.done()
        await jobs_service.cancel(db, ctx_for(org.id), job_id)
        work = await asyncio.wait_for(poll, 3)
        assert work.kill == [KillInstruction(job_id, 1, "cancelled", 30.0)]
    finally:
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        await hub.close()
