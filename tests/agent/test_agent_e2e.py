"""The agent against a real server (uvicorn on a loopback port) with simulated GPUs:
registration, heartbeats, metrics through the API, restarts of either side, revocation, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.agent.loop import Agent, AgentConfig, AgentError
from gpufleet.agent.server_api import ServerUnreachable
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer, free_port
from tests.pg import PgServer


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


def _server(pg_server: PgServer, db_name: str, port: int | None = None) -> LiveServer:
    kw: dict[str, Any] = {"port": port} if port else {}
    return LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), **kw)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = _server(pg_server, db_name)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def api(live: LiveServer, owner: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, headers=owner.headers) as c:
        yield c


async def _token(api: httpx.AsyncClient, **body: Any) -> str:
    r = await api.post("/v1/join-tokens", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _clock(start: datetime | None = None) -> Callable[[], datetime]:
    """One second later at each call: samples with distinct, known times."""
    t = [start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)]

    def now() -> datetime:
        t[0] += timedelta(seconds=1)
        return t[0]

    return now


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (up to 30 s) for something the agent does on its own schedule (its heartbeat loop)."""
    for _ in range(1500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def _config(url: str, state_dir: Path, **kw: Any) -> AgentConfig:
    base: dict[str, Any] = {"server": url, "simulate": "2xA100-80GB", "name": "sim-1", "state_dir": state_dir}
    return AgentConfig(**{**base, **kw})


async def test_register_heartbeat_and_metrics_visible(live: LiveServer, api: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await _token(api, max_uses=1)
    agent = Agent(_config(live.url, tmp_path, join_token=token, labels={"zone": "a"}), now=_clock())
    stored = await agent.start()
    assert stored is not None and stored.name == "sim-1"
    cred_file = tmp_path / "host-credential.json"
    assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600 and stored.credential in cred_file.read_text()
    for _ in range(3):
        assert agent.sample_once() == 2
    reply = await agent.heartbeat_once()
    assert (reply.host_status, reply.samples_received, len(agent.buffer)) == ("ready", 6, 0)
    assert reply.heartbeat_interval_s == agent.interval_s == 10.0
    host = (await api.get(f"/v1/hosts/{stored.host_id}")).json()
    assert host["simulated"] and host["labels"] == {"zone": "a"} and host["status"] == "ready"
    assert [g["model"] for g in host["gpus"]] == ["A100-80GB"] * 2 and all(g["simulated"] for g in host["gpus"])
    series = (await api.get(f"/v1/gpus/{host['gpus'][0]['id']}/metrics")).json()
    assert len(series["points"]) == 3 and all(p["memory_used_mb"] is not None for p in series["points"])
    await agent.close()


async def test_restarted_agent_reuses_its_credential(live: LiveServer, api: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await _token(api, max_uses=1)
    first = Agent(_config(live.url, tmp_path, join_token=token), now=_clock())
    registered = await first.start()
    await first.close()
    # The token is used up: a second registration would fail. The restarted agent needs none.
    again = Agent(_config(live.url, tmp_path), now=_clock())
    stored = await again.start()
    assert stored is not None and registered is not None and stored.host_id == registered.host_id
    again.sample_once()
    reply = await again.heartbeat_once()
    assert reply.samples_received == 2
    hosts = (await api.get("/v1/hosts")).json()["items"]
    assert [h["id"] for h in hosts] == [str(stored.host_id)] and hosts[0]["agent_version"]
    # Another server's URL with this state dir: a clear refusal, not "unknown credential".
    with pytest.raises(AgentError, match="holds a credential for"):
        await Agent(_config("http://127.0.0.1:1", tmp_path)).start()
    with pytest.raises(AgentError, match="pass a join token in GPUFLEET_JOIN_TOKEN, with --join-token-file"):
        await Agent(_config(live.url, tmp_path / "empty")).start()
    await again.close()


async def test_samples_survive_a_server_restart(
    live: LiveServer, api: httpx.AsyncClient, tmp_path: Path, pg_server: PgServer, db_name: str
) -> None:
    token = await _token(api)
    agent = Agent(_config(live.url, tmp_path, join_token=token, batch_samples=4), now=_clock())
    stored = await agent.start()
    assert stored is not None
    agent.sample_once()
    await agent.heartbeat_once()
    live.stop()
    for _ in range(5):
        agent.sample_once()
    with pytest.raises(ServerUnreachable):
        await agent.heartbeat_once()
    assert len(agent.buffer) == 10  # kept, not dropped
    again = _server(pg_server, db_name, port=live.port)
    await asyncio.to_thread(again.start)
    try:
        sent = []
        while agent.buffer:  # the backlog goes out oldest first, in batches of at most 4
            sent.append((await agent.heartbeat_once()).samples_received)
        assert sent == [4, 4, 2]
        gpus = (await api.get(f"/v1/gpus?host_id={stored.host_id}")).json()["items"]
        counts = [len((await api.get(f"/v1/gpus/{g['id']}/metrics")).json()["points"]) for g in gpus]
        assert counts == [6, 6]
    finally:
        await agent.close()
        await asyncio.to_thread(again.stop)


async def test_bounded_buffer_drops_the_oldest(tmp_path: Path) -> None:
    agent = Agent(_config("http://127.0.0.1:1", tmp_path, buffer_samples=5), now=_clock())
    agent.open()
    for _ in range(4):
        agent.sample_once()
    assert len(agent.buffer) == 5 and agent.dropped_samples == 3
    assert [seq for seq, _ in agent.buffer] == [4, 5, 6, 7, 8]
    await agent.close()


async def test_revoked_agent_stops_with_a_message(live: LiveServer, api: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await _token(api)
    config = _config(live.url, tmp_path, join_token=token, interval_s=0.1, sample_interval_s=0.05)
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await _until(lambda: agent.last_reply is not None or task.done())
    assert not task.done(), task
    assert agent.credential is not None
    r = await api.post(f"/v1/hosts/{agent.credential.host_id}/revoke")
    assert r.status_code == 200
    with pytest.raises(AgentError, match=r"host credential revoked.*agent stops.*new join token"):
        await asyncio.wait_for(task, 10)
    assert not (tmp_path / "host-credential.json").exists() and (tmp_path / "host-credential.revoked").exists()
    # Started again with a join token, it registers the host anew, in place.
    again = Agent(config)
    stored = await again.start()
    assert stored is not None and stored.host_id == agent.credential.host_id
    await again.close()


async def test_stop_ends_run_quickly_even_with_a_request_in_flight(
    live: LiveServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    token = await _token(api)
    agent = Agent(_config(live.url, tmp_path, join_token=token, interval_s=0.1, sample_interval_s=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await _until(lambda: agent.last_reply is not None)
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1.0
    # A server that accepts and never answers: the request is abandoned after the grace period.
    accepted: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        connected.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stuck = Agent(_config(f"http://127.0.0.1:{port}", tmp_path / "s", join_token=token, stop_grace_s=0.2))
    stop = asyncio.Event()
    task = asyncio.create_task(stuck.run(stop))
    await asyncio.wait_for(connected.wait(), 10)  # the registration request is in flight
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 5)  # returns normally: stopped before registering
    assert time.monotonic() - started < 1.0 and stuck.credential is None
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpufleet.cli.main", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _has_nvml() -> bool:
    import ctypes.util

    return ctypes.util.find_library("nvidia-ml") is not None


@pytest.mark.skipif(_has_nvml(), reason="this machine has an NVIDIA driver; scripts/gpu_check.sh covers NVML")
def test_no_nvml_is_one_clear_line(tmp_path: Path) -> None:
    proc = _cli("--server", f"http://127.0.0.1:{free_port()}", "--state-dir", str(tmp_path),
                env={"GPUFLEET_JOIN_TOKEN": "gfj_x"})  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "NVML is not available" in err and "--simulate" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


async def test_the_agent_program_registers_and_exits_0_on_sigterm(
    live: LiveServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    token = await _token(api)
    proc = _cli(
        "--server",
        live.url,
        "--join-token",
        token,
        "--simulate",
        "8xH100-80GB",
        "--name",
        "prog-1",
        "--state-dir",
        str(tmp_path),
        "--interval",
        "0.5",
        "--label",
        "zone=b",
    )
    try:
        deadline = time.monotonic() + 60  # generous: a loaded machine imports slowly
        while True:
            hosts = (await api.get("/v1/hosts")).json()["items"]
            if hosts and hosts[0]["last_heartbeat_at"] != hosts[0]["registered_at"]:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = await asyncio.to_thread(proc.communicate, timeout=10)
                raise AssertionError(f"the agent did not heartbeat (exit {proc.returncode}): {err[-2000:]}")
            await asyncio.sleep(0.1)
        assert (hosts[0]["name"], hosts[0]["labels"], hosts[0]["simulated"]) == ("prog-1", {"zone": "b"}, True)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_bad_job_user_is_one_line_before_registering(tmp_path: Path) -> None:
    # No server listens there: the agent must refuse before it tries to register (and retries forever).
    proc = _cli(
        "--server",
        f"http://127.0.0.1:{free_port()}",
        "--simulate",
        "1xA100-80GB",
        "--state-dir",
        str(tmp_path),
        "--job-user",
        "no-such-user-here",
        env={"GPUFLEET_JOIN_TOKEN": "gfj_x"},
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "--job-user no-such-user-here" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
