"""One instance per directory (instance_lock.py) with real processes; and where the data dir is, and why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gpufleet import paths
from gpufleet.instance_lock import InstanceBusy, InstanceLock

HOLDER = """
import subprocess, sys, time
from pathlib import Path
from gpufleet.instance_lock import InstanceLock
InstanceLock(Path(sys.argv[1])).acquire(url="http://127.0.0.1:1")
child = subprocess.Popen(["sleep", "60"])  # like a job or postgres: must not keep the lock alive
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_live_holder_is_named_and_kill_9_frees_the_lock_even_with_children_alive(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(InstanceBusy) as busy:
            InstanceLock(path).acquire()
        assert busy.value.describe() == f"pid {holder.pid}, http://127.0.0.1:1"
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        assert psutil.pid_exists(child)
        lock = InstanceLock(path)
        lock.acquire(url="http://127.0.0.1:2")  # the stale lock is taken over, no clean-up needed
        assert lock.held and f'"pid": {os.getpid()}' in path.read_text()
        lock.release()
        assert path.read_text() == ""
    finally:
        holder.kill()
        os.kill(child, signal.SIGKILL)
        holder.wait(5)
        holder.stdout.close()


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    first, second = InstanceLock(tmp_path / "x.lock"), InstanceLock(tmp_path / "x.lock")
    first.acquire()
    with pytest.raises(InstanceBusy):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_xdg_data_home_is_honoured_even_as_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("GPUFLEET_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert paths.default_data_dir_why() == (tmp_path / "gpufleet", "from XDG_DATA_HOME")
    assert paths.default_state_dir() == tmp_path / "gpufleet" / "agent"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.default_data_dir() == Path("/var/lib/gpufleet")
    assert "the default as root" in paths.data_dir_why(Path("/var/lib/gpufleet"))
    monkeypatch.setenv("GPUFLEET_DATA_DIR", str(tmp_path))
    assert paths.data_dir_why(tmp_path) == "from GPUFLEET_DATA_DIR"


def test_the_lock_file_is_not_inherited(tmp_path: Path) -> None:
    lock = InstanceLock(tmp_path / "y.lock")
    lock.acquire()
    try:
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
        try:
            time.sleep(0.1)
            fds = {os.path.realpath(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")}
            assert str(tmp_path / "y.lock") not in fds
        finally:
            child.kill()
            child.wait()
    finally:
        lock.release()
