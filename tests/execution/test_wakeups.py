"""The wake-up hub: one LISTEN connection fanning out to many in-process waiters, and its fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg

from gpufleet.db.pool import Database
from gpufleet.domain.execution import LogChunkIn
from gpufleet.repo.logs import LOGS_CHANNEL
from gpufleet.services import logs, reports
from gpufleet.services.wakeups import ASSIGNMENTS_CHANNEL, WakeHub
from tests.execution.helpers import OK, fleet, place, running, sql
from tests.execution.helpers import job as job_row


async def test_one_connection_wakes_exactly_the_waiter_of_the_host_given_work(db: Database) -> None:
    org, (host,) = await fleet(db)
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    hosts = [uuid.uuid4() for _ in range(1000)]
    hosts[417] = host.host_id
    try:
        assert hub.listening
        with contextlib.ExitStack() as stack:
            subs = [stack.enter_context(hub.subscribe("assignments", h)) for h in hosts]
            assert hub.waiting == 1000
            waits = [asyncio.create_task(s.wait(10)) for s in subs]
            await asyncio.sleep(0)
            await sql(db, "select pg_notify($1, '')", ASSIGNMENTS_CHANNEL)  # a wake-up for nobody here
            await asyncio.sleep(0.3)
            assert not any(w.done() for w in waits)
            await place(db, org.id)  # the trigger's bare NOTIFY; the hub finds host 417 has work
            done, _ = await asyncio.wait(waits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.2)  # give any wrongly woken waiter the chance to show up
            woken = [i for i, w in enumerate(waits) if w.done()]
            assert woken == [417] and done.pop().result() is True
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        assert hub.waiting == 0
    finally:
        await hub.close()


async def test_without_a_running_hub_waiters_fall_back_to_short_waits(db: Database) -> None:
    hub = WakeHub(db, poll_s=0.05, recheck_s=30)  # never started
    with hub.subscribe("logs", uuid.uuid4()) as sub:
        assert not hub.listening and hub.wait_cap_s == 0.05
        assert await sub.wait(10) is False  # returned after poll_s, not 10 s


async def test_notifications_carry_no_tenant_data(db: Database) -> None:
    """Any runtime-role session may LISTEN: it must learn that something happened, never what."""
    org, (host,) = await fleet(db)
    heard: list[tuple[str, str]] = []
    spy = await asyncpg.connect(db.runtime_dsn_)
    try:
        for channel in (ASSIGNMENTS_CHANNEL, LOGS_CHANNEL, "gpufleet_scheduler"):
            await spy.add_listener(channel, lambda _c, _p, ch, payload: heard.append((ch, payload)))
        job_id = await running(db, org.id, host)  # queued, placed on the host, started
        await logs.append_logs(db, host, job_id, 1, [LogChunkIn(0, "stdout", 0, b"hello\n")])
        await reports.report_exit(db, host, job_id, 1, OK)  # terminal: wakes log followers
        for _ in range(100):
            if {ch for ch, _ in heard} >= {ASSIGNMENTS_CHANNEL, LOGS_CHANNEL, "gpufleet_scheduler"}:
                break
            await asyncio.sleep(0.02)
    finally:
        await spy.close()
    assert {ch for ch, _ in heard} >= {ASSIGNMENTS_CHANNEL, LOGS_CHANNEL, "gpufleet_scheduler"}
    leaked = [(ch, p) for ch, p in heard if p]
    assert leaked == [], f"payloads name {leaked}; host {host.host_id}, job {job_id}"


async def test_a_log_follower_wakes_on_its_jobs_output_only(db: Database) -> None:
    org, (host,) = await fleet(db, gpus=2)
    mine, other = await running(db, org.id, host), await running(db, org.id, host)
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    try:
        with hub.subscribe("logs", mine) as sub:
            # The first notification may wake a new follower once (the hub learns where it stands)...
            await logs.append_logs(db, host, other, 1, [LogChunkIn(0, "stdout", 0, b"not yours\n")])
            await sub.wait(0.5)
            # ...after that, another job's output does not wake it...
            await logs.append_logs(db, host, other, 1, [LogChunkIn(1, "stdout", 10, b"still not\n")])
            assert await sub.wait(0.5) is False
            assert hub.notifications >= 2
            await logs.append_logs(db, host, mine, 1, [LogChunkIn(0, "stdout", 0, b"yours\n")])
            assert await sub.wait(5) is True  # ...its own does, at once
            assert (await job_row(db, mine))["status"] == "running"
    finally:
        await hub.close()
