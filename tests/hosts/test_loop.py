"""The generic background loop: interval, jitter, backoff, shutdown; no real waiting."""

from __future__ import annotations

import asyncio

import pytest

from gpufleet.background.loop import run_periodically


async def test_errors_do_not_stop_the_loop_and_stop_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def once() -> None:
        calls.append(len(calls))
        if len(calls) in (2, 3):
            raise RuntimeError("database away")
        if len(calls) == 5:
            stop.set()

    runs = await run_periodically("test", once, interval_s=0.001, stop=stop, jitter=0, max_backoff_s=0.004)
    assert runs == 5 and calls == [0, 1, 2, 3, 4]
    assert sum("failed (1 in a row)" in r.message or "failed (2 in a row)" in r.message for r in caplog.records) == 2


async def test_stop_interrupts_the_wait() -> None:
    stop = asyncio.Event()

    async def once() -> None:
        asyncio.get_running_loop().call_soon(stop.set)

    runs = await asyncio.wait_for(run_periodically("slow", once, interval_s=3600, stop=stop), timeout=5)
    assert runs == 1
