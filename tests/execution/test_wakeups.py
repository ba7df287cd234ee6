"""The wake-up hub: one LISTEN connection fanning out to many in-process waiters, and its fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from gpufleet.db.pool import Database
from gpufleet.services.wakeups import ASSIGNMENTS_CHANNEL, WakeHub
from tests.execution.helpers import sql


async def test_one_connection_wakes_exactly_the_waiter_of_the_notified_host(db: Database) -> None:
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    hosts = [uuid.uuid4() for _ in range(1000)]
    try:
        assert hub.listening
        with contextlib.ExitStack() as stack:
            subs = [stack.enter_context(hub.subscribe("assignments", h)) for h in hosts]
            assert hub.waiting == 1000
            waits = [asyncio.create_task(s.wait(10)) for s in subs]
            await asyncio.sleep(0)
            await sql(db, "select pg_notify($1, $2)", ASSIGNMENTS_CHANNEL, str(hosts[417]))
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
