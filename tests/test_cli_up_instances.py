"""The real `gpufleet` binary: one `up` per data dir and one agent per state dir, each refusal one line
naming the running instance; a port in use is one line; Ctrl-C (SIGINT) and SIGTERM stop everything in
order with no traceback and exit 0; a `gpufleet up` killed with -9 leaves a lock the next one takes over."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.liveserver import free_port

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


@pytest.fixture
def base() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is 0700, which the postgres user could not traverse as root.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-inst-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(base: Path, name: str = "data") -> dict[str, str]:
    env = {**os.environ, "GPUFLEET_DATA_DIR": str(base / name), "GPUFLEET_CONFIG_DIR": str(base / f"cfg-{name}")}
    env.pop("GPUFLEET_DATABASE_URL", None)
    return env


def _start_up(base: Path, port: int, log: Path, name: str = "data") -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [GPUFLEET, "up", "--port", str(port), "--simulate", "1xA100-80GB"],
            env=_env(base, name), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _until(check: Any, deadline_s: float = 60.0) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            value = check()
        except (httpx.TransportError, OSError, ValueError, KeyError, IndexError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _ready_host(base: Path, port: int, name: str = "data") -> str:
    """Wait for the local agent's host to be ready; the owner key."""
    cfg = base / f"cfg-{name}" / "config.toml"
    key = _until(lambda: cfg.read_text().split('api_key = "')[1].split('"')[0])
    headers = {"Authorization": f"Bearer {key}"}
    _until(lambda: [h for h in httpx.get(f"http://127.0.0.1:{port}/v1/hosts", headers=headers).json()["items"]
                    if h["status"] == "ready"])  # fmt: skip
    return str(key)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GPUFLEET, *args], env=env, capture_output=True, text=True, timeout=60)


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def _agent_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    return [p.pid for p in psutil.Process(proc.pid).children() if "gpufleet.agent" in " ".join(p.cmdline())]


def _follow(url: str, key: str, answers: list[int] | None = None) -> None:
    """Read ``url`` to its end; a complete answer's status goes to ``answers`` (a cut one is left out)."""
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"},
                                                             timeout=90) as stream:  # fmt: skip
        for _ in stream.iter_bytes():
            pass
        if answers is not None:
            answers.append(stream.status_code)


def test_a_second_instance_is_refused_in_one_line_and_sigint_stops_cleanly(base: Path) -> None:
    port = free_port()
    log = base / "up.log"
    proc = _start_up(base, port, log)
    try:
        key = _ready_host(base, port)
        # The first-run key went to the config file only: stdout is not a terminal (service logs).
        assert key not in log.read_text() and "not printed, as stdout is not a terminal" in log.read_text()
        url = f"http://127.0.0.1:{port}"
        # The job runs as its own unprivileged user: it may write only where everybody may.
        (base / "job").mkdir(mode=0o1777)
        (base / "job").chmod(0o1777)
        job_pid = base / "job" / "job.pid"
        r = httpx.post(
            f"{url}/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
            json={"name": "runs", "script": f"echo $$ > {job_pid}.tmp; mv {job_pid}.tmp {job_pid}; exec sleep 300"},
        )
        assert r.status_code == 201, r.text
        job = int(_until(lambda: job_pid.read_text().strip()))

        second = _run("up", "--port", str(free_port()), env=_env(base))
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and not second.stdout.strip(), second
        assert f"pid {proc.pid}" in lines[0] and url in lines[0] and "GPUFLEET_DATA_DIR" in lines[0], lines

        agent = _run("agent", "--server", url, "--state-dir", str(base / "data" / "agent"), env=_env(base))
        assert agent.returncode == 1
        lines = agent.stderr.strip().splitlines()
        assert len(lines) == 1 and "--state-dir" in lines[0] and f"pid {_agent_pids(proc)[0]}" in lines[0], lines

        busy = _run("up", "--port", str(port), env=_env(base, "other"))
        assert busy.returncode != 0 and "Traceback" not in busy.stdout + busy.stderr
        assert busy.stderr.strip().splitlines() == [
            f"error: port {port} on 127.0.0.1 is already in use (another gpufleet, or another program); "
            "choose another with --port or GPUFLEET_PORT"
        ]
        assert psutil.pid_exists(job)  # the refused instances touched nothing of the running one
        # A log stream and an event long poll still open when the stop comes are cut without a traceback.
        # The long poll is answered at the stop (the wake-up hub drains), not cut.
        polled: list[int] = []
        followers = [
            threading.Thread(target=_follow, args=(f"{url}/v1/jobs/{r.json()['id']}/logs/stream", key)),
            threading.Thread(target=_follow, args=(f"{url}/v1/events?after_seq={2**62}&wait_s=30", key, polled)),
        ]
        for follower in followers:
            follower.start()
        time.sleep(0.5)
    finally:
        code = _stop(proc, signal.SIGINT)
    out = log.read_text()
    for follower in followers:
        follower.join(10)
    assert code == 0, out
    assert "Traceback" not in out and "Exception in ASGI application" not in out, out
    stop = out[out.index("stopping (SIGINT)") :].splitlines()
    assert len(stop) <= 16 and stop[-1] == "gpufleet stopped", "\n".join(stop)
    assert "open request(s) (log streams, long polls) were cut at shutdown" in out
    assert polled == [200]
    assert _until(lambda: not psutil.pid_exists(job) or psutil.Process(job).status() == psutil.STATUS_ZOMBIE, 10)


def _start_up_on_a_terminal(base: Path, port: int) -> tuple[subprocess.Popen[bytes], bytearray]:
    """`gpufleet up` with its stdout on a pseudo-terminal, as when a person runs it; what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [GPUFLEET, "up", "--port", str(port), "--simulate", "1xA100-80GB"],
        env=_env(base), stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    out = bytearray()

    def drain() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                out.extend(chunk)
        os.close(master)

    threading.Thread(target=drain, daemon=True).start()
    return proc, out


def test_sigterm_stops_cleanly_and_a_lock_left_by_kill_9_is_taken_over(base: Path) -> None:
    port = free_port()
    first, printed = _start_up_on_a_terminal(base, port)
    try:
        key = _ready_host(base, port)
        assert key in printed.decode(errors="replace")  # on a terminal, the first-run key is shown once
        agents = _agent_pids(first)
    finally:
        first.kill()
        first.wait(timeout=10)
    # The agent of the killed `up` is told to stop (it must not keep the state dir and run jobs).
    _until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                           for p in agents), 30)  # fmt: skip
    log = base / "second.log"
    second = _start_up(base, port, log)
    try:
        _ready_host(base, port)
        assert "already running" not in log.read_text()
    finally:
        code = _stop(second, signal.SIGTERM)
    out = log.read_text()
    assert code == 0 and "Traceback" not in out and out.rstrip().endswith("gpufleet stopped"), out
