"""An agent given several replicas: fails over at once on connection errors and 5xx, stays where it
is (sticky), never moves on a 4xx; one credential serves any replica set that shares a replica."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.agent.loop import Agent, AgentConfig, AgentError
from gpufleet.agent.replicas import ReplicaSet, parse_servers, same_fleet
from gpufleet.agent.server_api import Refused, ServerUnreachable
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer, free_port
from tests.pg import PgServer

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


def test_server_lists_parse_from_commas_spaces_and_repeats() -> None:
    assert parse_servers("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]
    assert parse_servers(["http://a:1", "https://b http://a:1/"]) == ["http://a:1", "https://b"]
    for bad in ("", " , ", "a:1", "ftp://x", "http://a,b"):
        with pytest.raises(ValueError):
            parse_servers(bad)
    assert same_fleet("http://a,http://b", "http://b,http://c")
    assert not same_fleet("http://a", "http://b")
    assert not same_fleet("garbage", "http://b")


def test_two_requests_failing_together_move_once() -> None:
    r = ReplicaSet(["http://a", "http://b", "http://c"])
    assert r.order() == [0, 1, 2]
    r.failed(0, "reset")
    r.failed(0, "reset")  # a second request that failed on the same replica meanwhile
    assert (r.url, r.switches, r.order()) == ("http://b", 1, [1, 2, 0])
    single = ReplicaSet(["http://a"])
    single.failed(0, "reset")
    assert (single.url, single.switches) == ("http://a", 0)


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


def _server(pg_server: PgServer, db_name: str, port: int | None = None) -> LiveServer:
    kw: dict[str, Any] = {"port": port} if port else {}
    return LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), **kw)


@pytest.fixture
def replicas(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[list[LiveServer]]:
    servers = [_server(pg_server, db_name) for _ in range(2)]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


class _Always503:
    """A real HTTP server that answers every request 503 (a replica cut off from its database)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> _Always503:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _token(url: str, owner: Tenant) -> str:
    async with httpx.AsyncClient(base_url=url, headers=owner.headers) as api:
        r = await api.post("/v1/join-tokens", json={})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _config(servers: list[str], token: str | None, state: Path, **kw: Any) -> AgentConfig:
    return AgentConfig(
        server=",".join(servers),
        join_token=token,
        simulate="2xA100-80GB",
        name="node-ha",
        state_dir=state,
        run_jobs=False,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        **kw,
    )


@pytest.fixture
async def agent_on(replicas: list[LiveServer], owner: Tenant, tmp_path: Path) -> AsyncIterator[Agent]:
    token = await _token(replicas[0].url, owner)
    agent = Agent(_config([r.url for r in replicas], token, tmp_path / "state"))
    assert await agent.start() is not None
    yield agent
    await agent.close()


async def test_a_stopped_replica_is_passed_over_within_the_same_heartbeat_and_the_agent_stays(
    replicas: list[LiveServer], agent_on: Agent
) -> None:
    agent, (a, b) = agent_on, replicas
    await agent.heartbeat_once()
    assert agent.api.url == a.url
    await asyncio.to_thread(a.stop)
    await agent.heartbeat_once()  # no error: the same call went to b
    assert (agent.api.url, agent.api.replicas.switches) == (b.url, 1)
    # a comes back: the agent stays on b while b answers.
    restarted = _server_like(a)
    await asyncio.to_thread(restarted.start)
    try:
        for _ in range(3):
            await agent.heartbeat_once()
        assert (agent.api.url, agent.api.replicas.switches) == (b.url, 1)
        # b goes: back to a, again within one call.
        await asyncio.to_thread(b.stop)
        await agent.heartbeat_once()
        assert (agent.api.url, agent.api.replicas.switches) == (a.url, 2)
        # Both gone: ServerUnreachable, and the agent's backoff takes over.
        await asyncio.to_thread(restarted.stop)
        with pytest.raises(ServerUnreachable):
            await agent.heartbeat_once()
    finally:
        await asyncio.to_thread(restarted.stop)


def _server_like(old: LiveServer) -> LiveServer:
    return LiveServer(old.owner_dsn, old.runtime_dsn, port=old.port)


async def test_a_5xx_moves_on_a_4xx_does_not(replicas: list[LiveServer], owner: Tenant, tmp_path: Path) -> None:
    token = await _token(replicas[0].url, owner)
    async with _Always503() as sick:
        agent = Agent(_config([sick.url, replicas[0].url], token, tmp_path / "state"))
        try:
            assert await agent.start() is not None  # registered through the second replica
            assert sick.hits == 1 and agent.api.url == replicas[0].url
            # A refused request (here a bad credential: 401) is the same on every replica: no move.
            with pytest.raises(Refused):
                await agent.api.heartbeat("gfh_not-a-credential", agent._request([]))
            assert (agent.api.url, agent.api.replicas.switches) == (replicas[0].url, 1)
        finally:
            await agent.close()
        # Every replica answering 503: ServerUnreachable carries the Retry-After.
        alone = Agent(_config([sick.url], token, tmp_path / "other"))
        try:
            with pytest.raises(ServerUnreachable) as caught:
                await alone.api.heartbeat("gfh_x", alone._request([]))
            assert caught.value.retry_after == 7
        finally:
            await alone.close()


async def test_the_credential_serves_a_changed_replica_list_that_shares_a_replica(
    replicas: list[LiveServer], agent_on: Agent, tmp_path: Path
) -> None:
    _, b = replicas
    state = tmp_path / "state"
    grown = Agent(_config([b.url, f"http://127.0.0.1:{free_port()}"], None, state))
    try:
        assert await grown.start() is not None
        await grown.heartbeat_once()
    finally:
        await grown.close()
    elsewhere = Agent(_config([f"http://127.0.0.1:{free_port()}"], None, state))
    with pytest.raises(AgentError, match="holds a credential for"):
        await elsewhere.start()
    await elsewhere.close()


def test_the_command_takes_repeated_and_comma_separated_servers(tmp_path: Path) -> None:
    bad = subprocess.run(
        [GPUFLEET, "agent", "--server", "http://127.0.0.1:1", "--server", "nope", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "error: --server: 'nope' is not a server URL" in bad.stderr
