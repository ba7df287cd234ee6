"""`gpufleet up` runs everything a first try needs: server, embedded database, scheduler and a local
agent (simulated GPUs here); SIGTERM leaves nothing behind: no agent, no postgres, no job."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gpufleet.agent.processes.users import SlotUsers, hidden_from_jobs
from gpufleet.db.embedded import EmbeddedPostgres
from tests.liveserver import free_port


def _alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _poll(check: object, deadline_s: float = 60.0) -> object:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            value = check()  # type: ignore[operator]
        except (httpx.TransportError, OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")  # pragma: no cover


@pytest.fixture
def base() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is 0700, which the postgres user could not traverse as root.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_runs_a_job_on_its_local_agent_and_sigterm_leaves_nothing(base: Path) -> None:
    tmp_path = base
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GPUFLEET_DATA_DIR": str(tmp_path / "data"), "GPUFLEET_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("GPUFLEET_DATABASE_URL", None)
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli.main", "up", "--port", str(port), "--simulate", "2xA100-80GB"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pids: dict[str, int | None] = {}
    try:
        key = str(_poll(lambda: (tmp_path / "cfg" / "config.toml").read_text().split('api_key = "')[1].split('"')[0]))
        headers = {"Authorization": f"Bearer {key}"}
        hosts = _poll(lambda: httpx.get(f"{url}/v1/hosts", headers=headers, timeout=2).json()["items"])
        assert isinstance(hosts, list) and [h["simulated"] for h in hosts] == [True], hosts
        assert "SIMULATED inventory 2xA100-80GB" in log.read_text()
        # As root the job runs as an unprivileged gpufleet-job-N user: give it a place it may write.
        (tmp_path / "job").mkdir(mode=0o1777)
        (tmp_path / "job").chmod(0o1777)
        pidfile = tmp_path / "job" / "job.pid"
        r = httpx.post(
            f"{url}/v1/jobs",
            headers=headers,
            timeout=10,
            json={"name": "stays", "script": f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300"},
        )
        assert r.status_code == 201, r.text
        pids["job"] = int(str(_poll(lambda: pidfile.read_text().strip())))
        agent = [p for p in psutil.Process(proc.pid).children() if "gpufleet.agent" in " ".join(p.cmdline())]
        assert len(agent) == 1 and _alive(pids["job"])
        if os.geteuid() == 0:  # the job is not root's, though `up` is
            assert psutil.Process(pids["job"]).uids().real != 0
        pids["agent"] = agent[0].pid
        pids["postgres"] = EmbeddedPostgres(tmp_path / "data" / "postgres").server_pid()
        assert _alive(pids["postgres"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    assert _poll(lambda: not any(_alive(p) for p in pids.values()), deadline_s=10), pids
    assert "Traceback" not in log.read_text().split("Shutting down")[0], log.read_text()


README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BIN = str(Path(sys.executable).parent / "gpufleet")


def test_the_readme_tours_first_job_runs_as_written(base: Path) -> None:
    """The tour's submit and `logs -f` lines, as the README writes them, against `gpufleet up` (as root:
    the job runs as a gpufleet-job-N user, who cannot reach a Python under root's 0700 home)."""
    submit = next(line for line in README.splitlines() if line.startswith("ID=$(") and "jobs submit" in line)
    follow = next(line for line in README.splitlines() if "jobs logs -f $ID" in line)
    tour = "\n".join(line.split("#")[0].replace(".venv/bin/gpufleet", BIN) for line in (submit, follow))
    port = free_port()
    env = {**os.environ, "GPUFLEET_DATA_DIR": str(base / "data"), "GPUFLEET_CONFIG_DIR": str(base / "cfg")}
    for name in ("GPUFLEET_DATABASE_URL", "GPUFLEET_URL", "GPUFLEET_API_KEY"):
        env.pop(name, None)
    log = base / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([BIN, "up", "--port", str(port), "--simulate", "1xA100-80GB"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _poll(lambda: (base / "cfg" / "config.toml").exists() and "local agent" in log.read_text())
        r = subprocess.run(["bash", "-euc", tour], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", ""), (r, log.read_text())
        # A job that fails: `logs -f` says how it ended and exits 3, as `jobs wait` does.
        fails = f"ID=$({BIN} jobs submit -q --gpus 1 -- sh -c 'echo bye; exit 3')\n{BIN} jobs logs -f $ID"
        r = subprocess.run(["bash", "-uc", fails], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (3, "bye\n"), (r, log.read_text())
        assert r.stderr.endswith(" failed: exited with code 3\n") and r.stderr.count("\n") == 1, r.stderr
        if os.geteuid() == 0:  # said once at start when this PATH or Python are closed to job users
            hidden = hidden_from_jobs(SlotUsers.__new__(SlotUsers), os.environ.get("PATH"), sys.executable)
            assert (hidden is not None) == ("job users cannot reach" in log.read_text()), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
