"""The embedded PostgreSQL: starts, serves, is shared, stops, and changes no permission outside its dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.errors import ConfigurationError


def _modes(path: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def base() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is 0700, which the postgres user could not traverse as root.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_start_serve_stop_leaves_nothing_behind(base: Path) -> None:
    venv_bin = Path(sys.executable).parent
    before = {**_modes(base), **_modes(venv_bin)}
    server = EmbeddedPostgres(base / "postgres")
    server.start()
    pid = server.server_pid()
    try:
        assert _alive(pid)
        out = subprocess.run(
            ["psql", server.dsn(), "-tAc", "select current_database()"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0:  # psql may be absent; the Python driver check below always runs
            assert out.stdout.strip() == "gpufleet"
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert {**_modes(base), **_modes(venv_bin)} == before


def test_two_processes_share_one_server_and_the_last_stops_it(base: Path) -> None:
    root = base / "postgres"
    first = EmbeddedPostgres(root)
    first.start()
    pid = first.server_pid()
    code = (
        "import sys; from pathlib import Path; from gpufleet.db.embedded import EmbeddedPostgres;"
        f"s = EmbeddedPostgres(Path({str(root)!r})); s.start(); print(s.server_pid()); s.stop()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert int(out.stdout.strip()) == pid  # the second process joined, it did not start another
    assert _alive(pid)  # and leaving did not stop the server the first still uses
    first.stop()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="the traversal check applies when running as root")
def test_refuses_a_data_dir_the_service_user_cannot_reach(base: Path) -> None:
    private = base / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    server = EmbeddedPostgres(private / "data" / "postgres")
    with pytest.raises(ConfigurationError, match=r"private is not traversable.*GPUFLEET_DATA_DIR"):
        server.start()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gpufleet_up_serves_and_sigterm_stops_the_database(base: Path) -> None:
    port = _free_port()
    env = {**os.environ, "GPUFLEET_DATA_DIR": str(base / "data"), "GPUFLEET_CONFIG_DIR": str(base / "cfg")}
    env.pop("GPUFLEET_DATABASE_URL", None)
    log = base / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli.main", "up", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log.read_text()
        assert ready.json()["migrations"] == "current"
        pid = EmbeddedPostgres(base / "data" / "postgres").server_pid()
        assert _alive(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "postgres outlived gpufleet"
    # First run: an owner key was saved for the CLI, readable by its owner only; stdout is not a
    # terminal here (a service's log), so the key is not printed, only where it was saved.
    cfg = base / "cfg" / "config.toml"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    key = cfg.read_text().split('api_key = "')[1].split('"')[0]
    assert key.startswith("gfk_") and key not in log.read_text() and f"saved to {cfg}" in log.read_text()
    # A second start on the same data does not create another admin.
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli.main", "up", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                me = httpx.get(f"http://127.0.0.1:{port}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert me.status_code == 200 and me.json()["role"] == "owner"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "First run" not in log.read_text() and key not in log.read_text()
