"""The real `gpufleet agent` binary takes its join token from the environment, a file or stdin, never
showing it in `ps`; `--join-token VALUE` still works, with a warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from gpufleet.db.pool import RUNTIME_ROLE
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


def _token(live: LiveServer, owner: Tenant) -> str:
    r = httpx.post(f"{live.url}/v1/join-tokens", json={}, headers=owner.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _register(live: LiveServer, state: Path, *extra: str, env: dict[str, str] | None = None,
              stdin: str | None = None) -> tuple[str, list[str]]:  # fmt: skip
    """Start the agent, wait until it registered, note its argv as `ps` shows it, stop it: (stderr, argv)."""
    proc = subprocess.Popen(
        [GPUFLEET, "agent", "--server", live.url, "--state-dir", str(state), "--simulate", "1xA100-80GB",
         "--name", state.name, *extra],
        env={**os.environ, **(env or {})}, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    if stdin is not None:
        proc.stdin.write(stdin)
    proc.stdin.close()
    try:
        deadline = time.monotonic() + 30
        while not (state / "host-credential.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        argv = psutil.Process(proc.pid).cmdline()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    err = proc.stderr.read()
    proc.stderr.close()
    return err, argv


def test_the_token_from_env_file_or_stdin_never_shows_in_ps(live: LiveServer, owner: Tenant, tmp_path: Path) -> None:
    token = _token(live, owner)
    err, argv = _register(live, tmp_path / "env", env={"GPUFLEET_JOIN_TOKEN": token})
    assert token not in " ".join(argv) and "warning" not in err

    secret = tmp_path / "token"
    secret.write_text(token + "\n")
    err, argv = _register(live, tmp_path / "file", "--join-token-file", str(secret))
    assert token not in " ".join(argv) and "warning" not in err

    err, argv = _register(live, tmp_path / "stdin", "--join-token", "-", stdin=token + "\n")
    assert token not in " ".join(argv) and "warning" not in err


def test_a_token_in_argv_still_works_with_a_warning(live: LiveServer, owner: Tenant, tmp_path: Path) -> None:
    token = _token(live, owner)
    err, _ = _register(live, tmp_path / "argv", "--join-token", token)
    assert "warning: --join-token TOKEN is visible to every user of this machine in `ps`" in err


def test_token_sources_are_checked_in_one_line(tmp_path: Path) -> None:
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GPUFLEET, "agent", "--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "s"), *args],
            input=stdin, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    missing = run("--join-token-file", str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: --join-token-file {tmp_path / 'nope'}: No such file or directory"
    ]
    both = run("--join-token-file", str(tmp_path / "nope"), "--join-token", "-")
    assert both.returncode == 1 and "not both" in both.stderr and len(both.stderr.strip().splitlines()) == 1
    empty = run("--join-token", "-", stdin="\n")
    assert empty.returncode == 1 and "nothing was read from stdin" in empty.stderr


def test_a_plain_agent_logs_what_matters_and_says_how_it_stopped(
    pg_server: PgServer, db_name: str, owner: Tenant, tmp_path: Path
) -> None:
    """No line per HTTP request (heartbeats every 0.2 s here); one line at stop about the jobs left."""
    live = LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), background=True)
    live.start()
    state = tmp_path / "state"
    env = {**os.environ, "GPUFLEET_JOIN_TOKEN": _token(live, owner)}
    argv = [GPUFLEET, "agent", "--server", live.url, "--state-dir", str(state), "--simulate", "1xA100-80GB",
            "--interval", "0.2"]  # fmt: skip

    def job() -> dict[str, object]:
        return dict(httpx.get(f"{live.url}/v1/jobs/{job_id}", headers=owner.headers).json())

    def heartbeat() -> object:
        return httpx.get(f"{live.url}/v1/hosts", headers=owner.headers).json()["items"][0]["last_heartbeat_at"]

    def run_until(check: object, *extra: str) -> str:
        proc = subprocess.Popen([*argv, *extra], env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not check():  # type: ignore[operator]
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            time.sleep(1)  # a few heartbeats
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert proc.stderr is not None
        with proc.stderr:
            return proc.stderr.read()

    try:
        r = httpx.post(f"{live.url}/v1/jobs", headers=owner.headers,
                       json={"name": "stays", "gpu_count": 0, "command": ["sleep", "60"]})  # fmt: skip
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        err = run_until(lambda: job()["status"] == "running")
        assert "HTTP Request" not in err and "httpx" not in err, err
        assert err.rstrip().splitlines()[-1].endswith("stopped; 1 job left running for the next start to adopt"), err
        # The next start adopts it; stopped with --stop-jobs-on-exit, it is interrupted.
        before = heartbeat()
        err = run_until(lambda: heartbeat() != before, "--stop-jobs-on-exit")
        assert "HTTP Request" not in err and "stopped 1 job (interrupted" in err.rstrip().splitlines()[-1], err
        deadline = time.monotonic() + 20
        while job()["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job()["status"] != "running"
    finally:
        live.stop()
