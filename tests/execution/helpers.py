"""Builders for the execution tests: a registered host, placed and running jobs, and SQL snapshots."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.execution import ExecutionPolicy, ExitReport
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.tenancy import Organization
from gpufleet.services import reports
from tests.factories import create_org
from tests.hosts.helpers import register
from tests.scheduling.helpers import assert_clean, scheduler, submit

__all__ = ["assert_clean"]

POLICY = ExecutionPolicy(cancel_grace_s=30.0, kill_margin_s=30.0, host_loss_grace_s=60.0)
OK = ExitReport("succeeded", 0, None, "exited with code 0")


async def fleet(db: Database, *names: str, gpus: int = 4) -> tuple[Organization, list[HostIdentity]]:
    org = await create_org(db)
    hosts = [(await register(db, org.id, name, gpus))[1] for name in names or ("node-1",)]
    return org, hosts


async def add_host(db: Database, org_id: UUID, name: str, gpus: int = 4) -> HostIdentity:
    return (await register(db, org_id, name, gpus))[1]


async def place(db: Database, org_id: UUID, **spec: Any) -> UUID:
    """Submit a job and let one scheduler cycle place it."""
    job_id = await submit(db, org_id, **spec)
    await scheduler(db).run_once()
    row = await job(db, job_id)
    assert row["status"] == "allocated", row
    return job_id


async def running(db: Database, org_id: UUID, host: HostIdentity, **spec: Any) -> UUID:
    job_id = await place(db, org_id, **spec)
    await reports.report_started(db, host, job_id, 1, pid=4242)
    return job_id


async def job(db: Database, job_id: UUID) -> dict[str, Any]:
    async with db.system_transaction() as conn:
        row = await conn.fetchrow("select * from jobs where id = $1", job_id)
    assert row is not None
    return dict(row)


async def sql(db: Database, query: str, *args: object) -> None:
    async with db.system_transaction() as conn:
        await conn.execute(query, *args)


async def events(db: Database, job_id: UUID) -> list[tuple[str, dict[str, Any]]]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch("select type, data from events where entity_id = $1 order by seq", job_id)
    return [(r["type"], r["data"]) for r in rows]


async def event_types(db: Database, job_id: UUID) -> list[str]:
    return [t for t, _ in await events(db, job_id)]


async def snapshot(db: Database) -> dict[str, Any]:
    """Everything a refused report could have touched, to compare before and after."""
    async with db.system_transaction() as conn:
        return {
            "jobs": [dict(r) for r in await conn.fetch("select * from jobs order by id")],
            "events": await conn.fetchval("select count(*) from events"),
            "allocations": [dict(r) for r in await conn.fetch("select * from allocations order by id")],
            "gpus": [dict(r) for r in await conn.fetch("select * from gpu_resources order by id")],
            "hosts": [
                dict(r)
                for r in await conn.fetch(
                    "select id, status, cpu_milli_allocated, ram_mb_allocated from hosts order by id"
                )
            ],
            "attempts": [dict(r) for r in await conn.fetch("select * from job_attempts order by id")],
            "logs": await conn.fetchval("select count(*) from job_logs"),
        }
