"""Shared helpers for the scheduling tests: settings, a scheduler, and the ledger audit in SQL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.scheduler.service import Scheduler
from gpufleet.services import jobs as jobs_service
from tests.factories import ctx_for, job_spec


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"scheduler_starvation_after_s": 3600.0, "scheduler_leader_retry_s": 0.05}
    return Settings(**{**base, **overrides})


def scheduler(db: Database, **overrides: Any) -> Scheduler:
    return Scheduler(db, settings(**overrides))


async def submit(db: Database, org_id: UUID, **spec: Any) -> UUID:
    job = await jobs_service.submit(db, ctx_for(org_id), job_spec(**spec))
    return job.id


AUDIT = {
    "gpu_ledger": """
        select g.id from gpu_resources g
         where g.allocated_milli <> (select coalesce(sum(a.milli), 0) from allocations a
                                      where a.gpu_id = g.id and a.released_at is null)
            or g.allocated_memory_mb <> (select coalesce(sum(a.memory_mb), 0) from allocations a
                                          where a.gpu_id = g.id and a.released_at is null)
            or g.allocated_milli > 1000 or g.allocated_memory_mb > g.memory_mb""",
    "host_ledger": """
        select h.id from hosts h
         where h.cpu_milli_allocated <> (select coalesce(sum(j.cpu_milli), 0) from jobs j
                                          where j.host_id = h.id and j.status in ('allocated', 'running'))
            or h.ram_mb_allocated <> (select coalesce(sum(j.ram_mb), 0) from jobs j
                                       where j.host_id = h.id and j.status in ('allocated', 'running'))""",
    "leaked": """
        select a.id from allocations a join jobs j on j.id = a.job_id
         where a.released_at is null
           and (j.status not in ('allocated', 'running') or a.attempt <> j.attempt or a.host_id <> j.host_id)""",
    "unbacked": """
        select j.id from jobs j
         where j.status in ('allocated', 'running') and j.gpu_count > 0
           and (select count(*) from allocations a where a.job_id = j.id and a.released_at is null) <> j.gpu_count""",
}


async def audit(db: Database) -> dict[str, list[UUID]]:
    """Every ledger invariant, checked by SQL; an empty list for each means the ledger is exact."""
    out: dict[str, list[UUID]] = {}
    async with db.system_transaction() as conn:
        for name, sql in AUDIT.items():
            out[name] = [r[0] for r in await conn.fetch(sql)]
    return out


async def assert_clean(db: Database) -> None:
    found = await audit(db)
    assert all(not v for v in found.values()), found


async def status_of(db: Database, job_id: UUID) -> tuple[str, str | None, str | None]:
    async with db.system_transaction() as conn:
        row = await conn.fetchrow("select status, pending_reason, status_reason from jobs where id = $1", job_id)
    assert row is not None
    return row["status"], row["pending_reason"], row["status_reason"]
