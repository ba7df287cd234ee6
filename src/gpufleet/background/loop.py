"""The generic periodic loop: interval with jitter, exponential backoff on errors, clean shutdown.

Tasks expose ``run_once()``; tests call that directly and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def next_delay(interval_s: float, failures: int, *, jitter: float, max_backoff_s: float, rng: random.Random) -> float:
    """Seconds until the next run: the interval, doubled per consecutive failure up to the cap,
    spread by +-``jitter`` (a fraction) so replicas do not run in lockstep."""
    base = interval_s if failures == 0 else min(max_backoff_s, interval_s * 2.0**failures)
    return max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))


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
        delay = next_delay(interval_s, failures, jitter=jitter, max_backoff_s=max_backoff_s, rng=rng)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    log.debug("background task %s stopped after %d runs", name, runs)  # one per task: noise at a stop
    return runs
