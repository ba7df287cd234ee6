"""The one backoff rule of every retrying loop (gpufleet/backoff.py)."""

from __future__ import annotations

import random

import pytest

from gpufleet.backoff import Backoff, delay_after


def test_delay_doubles_per_failure_up_to_the_cap_and_jitter_stays_in_bounds() -> None:
    rng = random.Random(7)
    assert [delay_after(10, f, cap=300, rng=rng) for f in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    spread = [delay_after(10, 0, cap=300, jitter=0.1, rng=rng) for _ in range(200)]
    assert all(9 <= d <= 11 for d in spread) and len(set(spread)) > 100


def test_an_interval_longer_than_the_cap_is_kept_until_a_failure() -> None:
    assert delay_after(600, 0, cap=300) == 600
    assert delay_after(600, 1, cap=300) == 300


def test_backoff_grows_to_its_cap_and_a_reset_starts_again() -> None:
    backoff = Backoff(0.05, cap=1.0)
    assert [backoff.next() for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 7
    backoff.reset()
    assert backoff.next() == 0.05


def test_jittered_backoff_spreads_around_each_step() -> None:
    backoff = Backoff(1.0, cap=8.0, jitter=0.2, rng=random.Random(3))
    delays = [backoff.next() for _ in range(5)]
    for step, d in zip([1, 2, 4, 8, 8], delays, strict=True):
        assert 0.8 * step <= d <= 1.2 * step


@pytest.mark.parametrize(("initial", "cap", "jitter"), [(0, 1, 0), (2, 1, 0), (1, 2, 1.0), (1, 2, -0.1)])
def test_nonsense_settings_are_refused(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, cap=cap, jitter=jitter)


def test_equal_jitter_keeps_half_of_each_step_and_the_agents_first_wait_is_its_initial() -> None:
    rng = random.Random(7)
    for failures in range(8):
        base = min(30.0, 1.0 * 2.0**failures)
        for _ in range(50):
            d = delay_after(1.0, failures, cap=30.0, equal=True, rng=rng)
            assert base / 2 <= d <= base
    # the agent counts failures from 1: its first retry waits between half and all of backoff_initial_s
    from gpufleet.agent.loop import Agent, AgentConfig

    agent = Agent.__new__(Agent)
    agent.config = AgentConfig(server="http://127.0.0.1:1", backoff_initial_s=2.0, backoff_max_s=30.0)
    agent.rng = random.Random(3)
    firsts = [agent._backoff(1) for _ in range(50)]
    assert all(1.0 <= d <= 2.0 for d in firsts) and max(firsts) - min(firsts) > 0.1
    assert all(15.0 <= agent._backoff(20) <= 30.0 for _ in range(20))
    assert agent._backoff(1, retry_after=12.0) == 12.0
