"""The supervisor shim passes on a signal the group got before the job existed (a cancel right
after the start): the job still stops on SIGTERM instead of living on until the SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from gpufleet.agent.processes import shim

SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


@pytest.fixture
def handlers() -> Iterator[None]:
    """The shim installs process-wide handlers: put this process's back afterwards."""
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _ended_by(pid: int, within_s: float = 10.0) -> int | None:
    """The signal that ended ``pid`` (None if it is still running after ``within_s``: then killed)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _spawn_sleep() -> int:
    sleep = shutil.which("sleep")
    assert sleep is not None
    return os.posix_spawn(sleep, ["sleep", "30"], dict(os.environ), setsigdef=SIGNALS)


@pytest.mark.usefixtures("handlers")
def test_a_sigterm_before_the_job_exists_reaches_it_once_it_does() -> None:
    shim.hold_group_signals()
    os.kill(os.getpid(), signal.SIGTERM)  # the group's SIGTERM, while the shim has no job yet
    pid = _spawn_sleep()
    shim.started(pid)
    assert _ended_by(pid) == signal.SIGTERM


@pytest.mark.usefixtures("handlers")
def test_after_the_start_the_shim_ignores_the_groups_signals_and_passes_nothing_on() -> None:
    shim.hold_group_signals()
    pid = _spawn_sleep()
    shim.started(pid)
    os.kill(os.getpid(), signal.SIGTERM)  # only the shim's copy: the job must not get it from the shim
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert _ended_by(pid, within_s=0.3) is None  # still running (then killed by the helper)
