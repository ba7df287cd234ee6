"""Assignments: what is delivered, redelivery until started, and the long-poll wake-up."""

from __future__ import annotations

import asyncio
import time

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.execution import Assignment
from gpufleet.errors import InvalidInput
from gpufleet.schemas.execution import AssignmentOut
from gpufleet.services import reports
from gpufleet.services.assignments import next_assignments
from gpufleet.services.wakeups import WakeHub
from tests.execution.helpers import add_host, assert_clean, fleet, place
from tests.scheduling.helpers import scheduler, submit


async def test_an_allocated_job_is_delivered_with_its_spec_and_gpus_until_it_is_started(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await place(
        db, org.id, gpu_count=2, command=["python", "train.py"], env={"A": "1"}, working_dir="/w", max_runtime_s=600
    )
    first = await next_assignments(db, host, wait_s=0)
    assert len(first) == 1
    a = first[0]
    assert (a.job_id, a.attempt, a.command, a.script, a.env, a.working_dir, a.max_runtime_s) == (
        job_id, 1, ["python", "train.py"], None, {"A": "1"}, "/w", 600,
    )  # fmt: skip
    assert len(a.gpus) == 2 and all(g.milli == 1000 and g.uuid.startswith("GPU-node-1-") for g in a.gpus)
    assert sorted(g.index for g in a.gpus) == [g.index for g in a.gpus]
    assert not a.fractional
    assert await next_assignments(db, host, wait_s=0) == first  # a lost reply loses nothing

    await reports.report_started(db, host, job_id, 1, pid=123)
    assert await next_assignments(db, host, wait_s=0) == []
    await assert_clean(db)


async def test_fractional_share_and_only_this_hosts_work(db: Database) -> None:
    org, (host,) = await fleet(db, gpus=1)
    job_id = await place(db, org.id, gpu_milli=250, command=None, script="echo hi")
    other_org, (stranger,) = await fleet(db, "node-x")
    theirs = await place(db, other_org.id)
    second = await add_host(db, org.id, "node-2")
    (a,) = await next_assignments(db, host, wait_s=0)
    assert a.job_id == job_id and a.fractional and a.script == "echo hi" and a.command is None
    assert (a.gpus[0].milli, a.gpus[0].memory_mib) == (250, 81920 // 4)
    # On the wire the share keeps its name (memory_mb), and the agent reads fractional off gpu_milli.
    wire = AssignmentOut.model_validate_json(AssignmentOut.model_validate(a).model_dump_json())
    assert wire.fractional and wire.gpu_milli == 250 and wire.gpus[0].memory_mb == 81920 // 4
    assert "fractional" not in wire.model_dump() and "memory_mib" not in wire.model_dump()["gpus"][0]
    assert await next_assignments(db, second, wait_s=0) == []
    assert [x.job_id for x in await next_assignments(db, stranger, wait_s=0)] == [theirs]


async def test_wait_is_bounded_and_validated(db: Database) -> None:
    _, (host,) = await fleet(db)
    t0 = time.monotonic()
    assert await next_assignments(db, host, wait_s=0.3) == []
    assert 0.25 <= time.monotonic() - t0 < 3
    with pytest.raises(InvalidInput):
        await next_assignments(db, host, wait_s=-1)


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll"])
async def test_a_waiting_agent_wakes_when_the_scheduler_places_a_job(db: Database, listen: bool) -> None:
    org, (host, other) = await fleet(db, "node-1", "node-2", gpus=1)
    hub = WakeHub(db, listen=listen, poll_s=0.1, recheck_s=30)
    await hub.start()
    waiters: list[asyncio.Task[list[Assignment]]] = []
    try:
        assert hub.listening
        waiters = [asyncio.create_task(next_assignments(db, h, wait_s=20, hub=hub)) for h in (host, other)]
        for _ in range(200):
            if hub.waiting == 2:
                break
            await asyncio.sleep(0.01)
        assert hub.waiting == 2
        t0 = time.monotonic()
        job_id = await submit(db, org.id)
        await scheduler(db).run_once()
        done, pending = await asyncio.wait(waiters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        elapsed = time.monotonic() - t0
        assert len(done) == 1 and elapsed < 5
        (got,) = done.pop().result()
        assert got.job_id == job_id
        assert not pending.pop().done()  # the other host's waiter sleeps on
        if listen:
            assert hub.notifications >= 1
    finally:
        await hub.close()
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    assert hub.waiting == 0


async def test_a_draining_hub_ends_long_polls_at_once(db: Database) -> None:
    """At shutdown (`gpufleet up` stopping) an agent's open long poll answers now, not in 30 s."""
    _, (host,) = await fleet(db, "n1")
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    try:
        poll = asyncio.create_task(next_assignments(db, host, wait_s=30, hub=hub))
        await asyncio.sleep(0.2)
        assert not poll.done()
        started = time.monotonic()
        hub.drain()
        assert await asyncio.wait_for(poll, 2) == [] and time.monotonic() - started < 1
        assert await next_assignments(db, host, wait_s=30, hub=hub) == []  # a new one does not wait either
    finally:
        await hub.close()
