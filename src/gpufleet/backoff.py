"""The one backoff for loops that wait and try again: delays that double from ``initial`` up to
``cap``, spread by +-``jitter`` (a fraction) so replicas and agents do not retry in lockstep, and
back to ``initial`` after a success.

    backoff = Backoff(0.5, cap=10.0, jitter=0.2)
    while True:
        try:
            await work()
            backoff.reset()
        except OSError:
            await asyncio.sleep(backoff.next())

Pollers waiting for a change use it without jitter (``Backoff(0.05, cap=1.0)``): the delays are
then exactly 50 ms, 100 ms, ... 1 s. ``delay_after`` is the same rule for a loop that counts its
own failures (``background/loop.py``). The SDK's one retry, resuming a dropped log stream
(``sdk/jobs.py``), uses it too; the SDK never repeats a plain request on its own, so a retry
library (tenacity, stamina) would have nothing to wrap but that generator, which it cannot.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# A retry delay as the agent's loops take it: (failures in a row, the server's Retry-After or None)
# -> seconds. The agent builds one (``Agent._backoff``) and hands it to its job and replica loops.
RetryDelay = Callable[[int, float | None], float]


def delay_after(
    initial: float,
    failures: int,
    *,
    cap: float,
    jitter: float = 0.0,
    equal: bool = False,
    rng: random.Random | None = None,
) -> float:
    """The wait after ``failures`` failures in a row: ``initial`` when none, else ``initial * 2**failures``
    up to ``cap``; then spread by +-``jitter``, or with ``equal`` "equal jitter": half of it fixed,
    half uniformly random (the agent's spread: thousands of agents never retry in step, and none
    retries sooner than half the step)."""
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    base = initial if failures <= 0 else min(cap, initial * 2.0**failures)
    if equal:
        return base / 2 + (rng or random).uniform(0, base / 2)
    if not jitter:
        return base
    return max(0.0, base * (1.0 + (rng or random).uniform(-jitter, jitter)))


class Backoff:
    """Successive delays of one loop; ``reset()`` after a success starts again from ``initial``."""

    def __init__(self, initial: float, *, cap: float, jitter: float = 0.0, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("initial must be positive and cap at least initial")
        delay_after(initial, 0, cap=cap, jitter=jitter)  # refuses a bad jitter now, not at the first wait
        self.initial, self.cap, self.jitter, self.rng = initial, cap, jitter, rng
        self.failures = 0

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long (up to ``cap``)."""
        delay = delay_after(self.initial, self.failures, cap=self.cap, jitter=self.jitter, rng=self.rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
