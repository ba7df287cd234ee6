"""Jobs as clients see them: each with the GPUs it holds now, read in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.jobs import Allocation, Job, JobStatus
from gpufleet.domain.tenancy import TenantContext
from gpufleet.repo import allocations as allocations_repo
from gpufleet.repo import costs as costs_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services import jobs
from gpufleet.services.lookup import found
from gpufleet.services.wakeups import WakeHub

_HOLDING = (JobStatus.ALLOCATED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class JobView:
    job: Job
    gpus: list[Allocation] = field(default_factory=list)
    cost: Decimal | None = None  # so far, running work included (docs/costs.md)


async def get(db: Database, ctx: TenantContext, job_id: UUID) -> JobView:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        job = found(await jobs_repo.get(conn, org_id=org_id, job_id=job_id), f"job {job_id}")
        held = (
            await allocations_repo.active_allocations_for_jobs(conn, org_id=org_id, job_ids=[job.id])
            if (job.status in _HOLDING)
            else []
        )
        cost = (await costs_repo.job_costs(conn, org_id=org_id, job_ids=[job.id]))[job.id]
    return JobView(job, held, cost)


async def cancel(db: Database, ctx: TenantContext, job_id: UUID) -> JobView:
    """``jobs.cancel``, answered as clients see the job."""
    (view,) = await with_gpus(db, ctx, [await jobs.cancel(db, ctx, job_id)])
    return view


async def wait(
    db: Database, ctx: TenantContext, job_id: UUID, timeout_s: float, *, hub: WakeHub | None = None
) -> JobView:
    """``jobs.wait`` (a long poll), answered as clients see the job."""
    (view,) = await with_gpus(db, ctx, [await jobs.wait(db, ctx, job_id, timeout_s, hub=hub)])
    return view


async def with_gpus(db: Database, ctx: TenantContext, jobs: Sequence[Job]) -> list[JobView]:
    """``jobs`` with what each holds now; one query for the whole list (none if none hold GPUs)."""
    org_id = ctx.org_id
    holding = [j.id for j in jobs if j.status in _HOLDING and j.spec.gpu.count > 0]
    by_job: dict[UUID, list[Allocation]] = {}
    money: dict[UUID, Decimal] = {}
    if jobs:
        async with db.transaction(org_id) as conn:
            if holding:
                for a in await allocations_repo.active_allocations_for_jobs(conn, org_id=org_id, job_ids=holding):
                    by_job.setdefault(a.job_id, []).append(a)
            money = await costs_repo.job_costs(conn, org_id=org_id, job_ids=[j.id for j in jobs])
    return [JobView(j, by_job.get(j.id, []), money.get(j.id)) for j in jobs]
