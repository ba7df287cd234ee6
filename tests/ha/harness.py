"""Several real `gpufleet server` processes on one PostgreSQL, real agents (simulated GPUs) that know
every replica, and a client that submits with `Idempotency-Key` and retries on any replica.

Every job this harness submits appends ``JOB_ID ATTEMPT PID`` to one file as its process starts:
``assert_exactly_once`` compares those start records with the attempts in the database, and
``assert_clean`` (the SQL ledger audit) runs after every scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpufleet.agent.loop import Agent, AgentConfig
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.scheduler.leader import APPLICATION_NAME, LEADER_LOCK
from tests.api.conftest import Tenant
from tests.e2e.conftest import RunningAgent, until
from tests.liveserver import free_port
from tests.pg import PgServer
from tests.scheduling.helpers import assert_clean

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")

# Quick enough for a test, and nothing a production replica would not also do.
REPLICA_ENV = {
    "GPUFLEET_HOST": "127.0.0.1",
    "GPUFLEET_LOG_LEVEL": "warning",
    "GPUFLEET_RATE_LIMIT_KEY_PER_MINUTE": "0",
    "GPUFLEET_RATE_LIMIT_IP_PER_MINUTE": "0",
    "GPUFLEET_SCHEDULER_LEADER_RETRY_S": "0.5",
    "GPUFLEET_CANCEL_GRACE_S": "1",
    "GPUFLEET_DATABASE_POOL_MIN": "1",
    "GPUFLEET_DATABASE_POOL_MAX": "8",
}


@dataclass
class Replica:
    """One `gpufleet server` process; keeps its port across restarts (agents and clients know it)."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [GPUFLEET, "server"],
                env={**self.env, "GPUFLEET_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def ready(self, deadline_s: float = 60.0) -> None:
        async def answers() -> bool:
            if not self.running:
                raise AssertionError(f"replica {self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    return (await c.get(f"{self.url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(answers, deadline_s=deadline_s, what=f"replica {self.name} to be ready")

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a rolling restart's stop): the replica finishes what it can and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    async def kill(self) -> None:
        """SIGKILL: no goodbye; its database sessions (and the leader lock) end with its sockets."""
        assert self.proc is not None
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, 10)

    def close(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Submitter:
    """A client that submits jobs round-robin over the replicas, each with its own Idempotency-Key,
    and retries a request it got no answer for (connection error, 5xx) on the next replica with
    the same key, until ``patience_s`` runs out (then it counts a failed submission)."""

    urls: list[str]
    headers: dict[str, str]
    patience_s: float = 30.0
    submitted: dict[str, str] = field(default_factory=dict)  # key -> job id
    retries: int = 0
    replays: int = 0
    failed: list[str] = field(default_factory=list)
    _next: itertools.cycle[int] = field(init=False)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(range(len(self.urls)))

    async def submit(self, client: httpx.AsyncClient, body: dict[str, Any], key: str | None = None) -> str | None:
        key = key or str(uuid.uuid4())
        deadline = time.monotonic() + self.patience_s
        while time.monotonic() < deadline:
            url = self.urls[next(self._next)]
            try:
                r = await client.post(f"{url}/v1/jobs", json=body, headers={**self.headers, "Idempotency-Key": key})
            except httpx.TransportError:
                self.retries += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code >= 500:
                self.retries += 1
                await asyncio.sleep(min(float(r.headers.get("retry-after", "0.2")), 0.5))
                continue
            assert r.status_code == 201, r.text
            self.replays += r.headers.get("idempotent-replayed") == "true"
            job_id = str(r.json()["id"])
            assert self.submitted.setdefault(key, job_id) == job_id, "a retry made a second job"
            return job_id
        self.failed.append(key)
        return None


@dataclass
class HaCluster:
    pg: PgServer
    db_name: str
    db: Database
    owner: Tenant
    tmp: Path
    replicas: list[Replica]
    token: str = ""
    agents: list[RunningAgent] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    @property
    def record(self) -> Path:
        """Where every job appends ``JOB_ID ATTEMPT PID`` as its process starts."""
        return self.tmp / "starts.log"

    def script(self, seconds: float) -> str:
        return f'echo "$GPUFLEET_JOB_ID $GPUFLEET_ATTEMPT $$" >> {self.record}; sleep {seconds}'

    def submitter(self) -> Submitter:
        return Submitter(self.urls, self.owner.headers)

    async def start_agent(self, name: str, gpus: str = "4xA100-80GB") -> RunningAgent:
        config = AgentConfig(
            server=",".join(self.urls),
            join_token=self.token,
            simulate=gpus,
            name=name,
            state_dir=self.tmp / name,
            interval_s=0.5,
            sample_interval_s=1.0,
            backoff_initial_s=0.1,
            backoff_max_s=0.5,
            assignment_wait_s=2.0,
            kill_grace_s=1.0,
            stop_jobs_on_exit=True,
            job_user="agent",
        )
        agent = Agent(config)
        stop = asyncio.Event()
        running = RunningAgent(agent, stop, asyncio.create_task(agent.run(stop)))
        self.agents.append(running)
        await until(
            lambda: (agent.jobs is not None and agent.jobs.reconciled.is_set()) or running.task.done(),
            what=f"agent {name} to reconcile",
        )
        assert not running.task.done(), running.task
        return running

    async def leader_pid(self) -> int | None:
        """The pid of the replica whose scheduler holds the leader lock (from its application_name)."""
        admin = await self.pg.admin()
        try:
            name = await admin.fetchval(
                """select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
                    where l.locktype = 'advisory' and l.granted and a.datname = $1
                      and l.classid::bigint = $2 and l.objid::bigint = $3 and a.application_name like $4""",
                self.db_name,
                LEADER_LOCK >> 32,
                LEADER_LOCK & 0xFFFF_FFFF,
                f"{APPLICATION_NAME} %",
            )
        finally:
            await admin.close()
        return None if name is None else int(name.split()[-1].split(":")[1])

    async def jobs(self) -> dict[str, dict[str, Any]]:
        async with self.db.system_transaction() as conn:
            rows = await conn.fetch(
                "select id, status, attempt, status_reason from jobs where organization_id = $1", self.owner.org.id
            )
        return {str(r["id"]): dict(r) for r in rows}

    async def wait_finished(self, job_ids: list[str], deadline_s: float = 60.0) -> dict[str, dict[str, Any]]:
        async def done() -> dict[str, dict[str, Any]] | None:
            jobs = await self.jobs()
            return jobs if all(jobs[j]["status"] in FINISHED for j in job_ids) else None

        try:
            return dict(await until(done, deadline_s=deadline_s, what="every job to finish"))
        except AssertionError:
            jobs = await self.jobs()
            raise AssertionError(Counter(j["status"] for j in jobs.values())) from None

    async def assert_exactly_once(self) -> Counter[str]:
        """Every attempt the database has a start for ran exactly once, and nothing else ran."""
        records = [line.split() for line in self.record.read_text().splitlines()] if self.record.exists() else []
        ran = Counter((job_id, int(attempt)) for job_id, attempt, _ in records)
        twice = [k for k, n in ran.items() if n > 1]
        assert not twice, f"attempts that started more than once: {twice}"
        async with self.db.system_transaction() as conn:
            rows = await conn.fetch(
                """select job_id::text, attempt from job_attempts
                    where organization_id = $1 and started_at is not null""",
                self.owner.org.id,
            )
        started = {(r["job_id"], r["attempt"]) for r in rows}
        assert set(ran) == started, {"ran, no attempt": set(ran) - started, "attempt, never ran": started - set(ran)}
        return Counter(str(a) for _, a in ran)

    async def audit(self) -> None:
        await assert_clean(self.db)
        await self.assert_exactly_once()

    async def close(self) -> None:
        for running in self.agents:
            running.stop.set()
        await asyncio.gather(*(asyncio.wait_for(r.task, 20) for r in self.agents), return_exceptions=True)
        for replica in self.replicas:
            replica.close()


def replica_env(pg: PgServer, db_name: str, tmp: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    data = tmp / f"data-{name}"
    data.mkdir(mode=0o755, exist_ok=True)
    return {
        **env,
        **REPLICA_ENV,
        "GPUFLEET_DATABASE_URL": pg.dsn(db_name),
        "GPUFLEET_DATABASE_RUNTIME_URL": pg.dsn(db_name, user=RUNTIME_ROLE),
        "GPUFLEET_DATA_DIR": str(data),
        "GPUFLEET_CONFIG_DIR": str(tmp / "config"),
    }


async def start_cluster(
    pg: PgServer, db_name: str, db: Database, owner: Tenant, tmp: Path, *, replicas: int = 3
) -> HaCluster:
    nodes = [Replica(f"r{i}", replica_env(pg, db_name, tmp, f"r{i}"), tmp / f"r{i}.log") for i in range(replicas)]
    cluster = HaCluster(pg, db_name, db, owner, tmp, nodes)
    try:
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.ready() for node in nodes))
        async with httpx.AsyncClient(base_url=nodes[0].url, headers=owner.headers, timeout=30) as api:
            r = await api.post("/v1/join-tokens", json={})
            assert r.status_code == 201, r.text
            cluster.token = r.json()["token"]
    except BaseException:
        with contextlib.suppress(Exception):
            await cluster.close()
        raise
    return cluster
