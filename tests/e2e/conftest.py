"""End-to-end: a real server (LiveServer, background tasks on) on real PostgreSQL, real agents with
simulated GPUs running real processes. ``cluster`` builds them; every test ends with the ledger audit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.agent.loop import Agent, AgentConfig
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer
from tests.scheduling.helpers import assert_clean

SERVER_SETTINGS: dict[str, Any] = {"cancel_grace_s": 1.0}
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


async def until(check: Callable[[], Any], *, deadline_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) every 20 ms until it returns something truthy."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class RunningAgent:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


@dataclass
class Cluster:
    pg: PgServer
    db_name: str
    db: Database
    owner: Tenant
    tmp: Path
    live: LiveServer
    api: httpx.AsyncClient
    token: str = ""
    agents: list[RunningAgent] = field(default_factory=list)

    def server(self, port: int | None = None) -> LiveServer:
        kw: dict[str, Any] = {"port": port} if port else {}
        return LiveServer(
            self.pg.dsn(self.db_name),
            self.pg.dsn(self.db_name, user=RUNTIME_ROLE),
            settings=dict(SERVER_SETTINGS),
            background=True,
            **kw,
        )

    def config(self, name: str = "node-1", **kw: Any) -> AgentConfig:
        base: dict[str, Any] = {
            "server": self.live.url,
            "join_token": self.token,
            "simulate": "4xA100-80GB",
            "name": name,
            "state_dir": self.tmp / name,
            "interval_s": 0.3,
            "sample_interval_s": 0.5,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
            "assignment_wait_s": 2.0,
            "kill_grace_s": 1.0,
            "stop_jobs_on_exit": True,
            # The tests' jobs run this interpreter, under root's 0700 home here: a job user could not
            # start it. test_job_isolation.py runs agents with the default (job users) instead.
            "job_user": "agent",
        }
        return AgentConfig(**{**base, **kw})

    async def start_agent(self, name: str = "node-1", **kw: Any) -> RunningAgent:
        agent = Agent(self.config(name, **kw))
        stop = asyncio.Event()
        running = RunningAgent(agent, stop, asyncio.create_task(agent.run(stop)))
        self.agents.append(running)
        await until(
            lambda: (agent.jobs is not None and agent.jobs.reconciled.is_set()) or running.task.done(),
            what="the agent to reconcile",
        )
        assert not running.task.done(), running.task
        return running

    async def submit(self, **body: Any) -> str:
        r = await self.api.post("/v1/jobs", json={"name": "e2e", "gpu_count": 1, **body})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait(self, job_id: str, *statuses: str, deadline_s: float = 30.0) -> dict[str, Any]:
        wanted = statuses or FINISHED

        async def check() -> dict[str, Any] | None:
            job = await self.job(job_id)
            return job if job["status"] in wanted else None

        return dict(await until(check, deadline_s=deadline_s, what=f"job {job_id} to be {'/'.join(wanted)}"))

    async def logs(self, job_id: str, attempt: int | None = None) -> dict[str, bytes]:
        """Every stored byte of an attempt, by stream (``system`` notices included)."""
        import base64

        out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray(), "system": bytearray()}
        after = -1
        while True:
            params: dict[str, Any] = {"after_seq": after}
            if attempt is not None:
                params["attempt"] = attempt
            r = await self.api.get(f"/v1/jobs/{job_id}/logs", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            for c in page["chunks"]:
                out[c["stream"]] += base64.b64decode(c["data_b64"])
            if not page["chunks"]:
                return {k: bytes(v) for k, v in out.items()}
            after = page["last_seq"]


@pytest.fixture
async def cluster(pg_server: PgServer, db_name: str, db: Database, tmp_path: Path) -> AsyncIterator[Cluster]:
    owner = await make_tenant(db, Role.OWNER)
    live = LiveServer(
        pg_server.dsn(db_name),
        pg_server.dsn(db_name, user=RUNTIME_ROLE),
        settings=dict(SERVER_SETTINGS),
        background=True,
    )
    await asyncio.to_thread(live.start)
    async with httpx.AsyncClient(base_url=live.url, headers=owner.headers, timeout=30) as api:
        c = Cluster(pg_server, db_name, db, owner, tmp_path, live, api)
        r = await api.post("/v1/join-tokens", json={})
        assert r.status_code == 201, r.text
        c.token = r.json()["token"]
        try:
            yield c
            # Every job the test left is finished: then no allocation may be held and no counter drift.
            await assert_clean(db)
        finally:
            for running in c.agents:
                if not running.task.done():
                    running.stop.set()
            await asyncio.gather(*(asyncio.wait_for(r.task, 20) for r in c.agents), return_exceptions=True)
            await asyncio.to_thread(c.live.stop)
