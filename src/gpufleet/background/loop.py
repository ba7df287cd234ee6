"""The generic periodic loop: interval with jitter, exponential backoff on errors, clean shutdown.

Tasks expose ``run_once()``; tests call that directly and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from gpufleet.backoff import delay_after

log = logging.getLogger(__name__)


async def run_periodically(
    name: str,
    run_once: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    stop: asyncio.Event,
    jitter: float = 0.1,
    max_backoff_s: float = 300.0,
    rng: random.Random | None = None,
) -> int:
    """Run ``run_once`` until ``stop`` is set; returns how many times it ran.

    An exception is logged and retried after an exponential backoff (capped at
    ``max_backoff_s``); it never ends the loop. Setting ``stop`` ends the wait at once;
    a run in progress finishes first.
    """
    if interval_s <= 0 or not 0 <= jitter < 1:
        raise ValueError("interval_s must be positive and jitter in [0, 1)")
    rng = rng or random.Random()
    failures = runs = 0
    while not stop.is_set():
        try:
            await run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception("background task %s failed (%d in a row)", name, failures)
        else:
            if failures:
                log.info("background task %s recovered after %d failures", name, failures)
            failures = 0
        runs += 1
        # the interval, doubled per consecutive failure up to the cap, spread so replicas differ
        delay = delay_after(interval_s, failures, cap=max_backoff_s, jitter=jitter, rng=rng)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    log.debug("background task %s stopped after %d runs", name, runs)  # one per task: noise at a stop
    return runs
