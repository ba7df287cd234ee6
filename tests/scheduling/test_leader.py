"""Leader election: one active scheduler; when the leader's connection dies another takes over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.scheduler.service import Scheduler
from tests.factories import create_host, create_org
from tests.scheduling.helpers import scheduler, status_of, submit


async def _until(check: Callable[[], Awaitable[bool]], limit_s: float = 5.0) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < limit_s, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_only_one_leads_and_a_follower_takes_over(db: Database) -> None:
    s1, s2 = scheduler(db), scheduler(db)
    try:
        assert await s1.leader.try_acquire()
        assert not await s2.leader.try_acquire()
        assert await s1.leader.still_leading() and not await s2.leader.still_leading()
        assert s1.leader.conn is not None
        s1.leader.conn.terminate()  # the leader's connection dies (process killed, network cut)
        assert not await s1.leader.still_leading()

        async def s2_leads() -> bool:
            return await s2.leader.try_acquire()

        await _until(s2_leads, limit_s=3)
        assert not await s1.leader.try_acquire()
    finally:
        await s1.leader.release()
        await s2.leader.release()


async def _allocated(db: Database, job_id: UUID) -> bool:
    return (await status_of(db, job_id))[0] == "allocated"


async def test_run_loops_wake_on_notify_and_fail_over(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(("A100-80GB", 81920),) * 4)
    # a long tick: only a NOTIFY (or taking over) can start a cycle quickly
    loops = [scheduler(db, scheduler_tick_s=60) for _ in range(2)]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(s.run(stop)) for s, stop in zip(loops, stops, strict=True)]
    try:

        async def one_leads() -> bool:
            return sum(s.leader.leading for s in loops) == 1 and any(s.stats.cycles for s in loops)

        await _until(one_leads)
        leader, follower = (loops[0], loops[1]) if loops[0].leader.leading else (loops[1], loops[0])
        first = await submit(db, org.id)
        woke_in = await _until(lambda: _allocated(db, first), limit_s=3)
        assert woke_in < 2 and follower.stats.cycles == 0

        assert leader.leader.conn is not None
        leader.leader.conn.terminate()

        async def took_over() -> bool:
            return follower.leader.leading and follower.stats.cycles > 0

        await _until(took_over, limit_s=5)
        second = await submit(db, org.id)
        await _until(lambda: _allocated(db, second), limit_s=3)
        assert not leader.leader.leading or not follower.leader.leading
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)


async def test_behind_a_transaction_pooler_a_lease_elects_and_polling_wakes(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id)
    kw = {"database_transaction_pooler": True, "scheduler_tick_s": 60, "scheduler_poll_s": 0.05, "scheduler_lease_s": 2}
    a, b = scheduler(db, **kw), scheduler(db, **kw)
    assert await a.leader.try_acquire() and not await b.leader.try_acquire()
    await a.leader.release()
    assert await b.leader.try_acquire()
    # an expired lease (a dead leader) is taken over
    async with db.system_transaction() as conn:
        await conn.execute("update scheduler_leases set expires_at = now() - interval '1 second'")
    assert await a.leader.try_acquire() and not await b.leader.still_leading()
    await a.leader.release()

    stop = asyncio.Event()
    loop: Scheduler = a
    task = asyncio.create_task(loop.run(stop))
    try:
        await _until(lambda: _cycled(loop))
        job = await submit(db, org.id)
        await _until(lambda: _allocated(db, job), limit_s=3)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def _cycled(s: Scheduler) -> bool:
    return s.stats.cycles > 0
