"""The sketch's allocate_gpu as a use case: atomic, conflict-safe, and recorded when it conflicts."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from gpufleet.db.pool import Database
from gpufleet.domain.jobs import Allocation, JobStatus
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Conflict, InvalidInput
from gpufleet.repo import allocations, events, gpus
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services import budgets
from gpufleet.services.lookup import found
from gpufleet.services.transitions import transition_job


async def allocate_gpu(
    db: Database, ctx: TenantContext, *, gpu_id: UUID, job_id: UUID, milli: int | None = None
) -> Allocation:
    """Give GPU ``gpu_id`` (or ``milli`` of it: the job's own share, the default) to pending job ``job_id``.

    Either the job becomes ``allocated`` on the GPU's host with the allocation recorded, or
    nothing changes and ``Conflict`` is raised (the GPU was taken meanwhile, or its host is not
    ready); the conflict itself is recorded as an ``allocation.conflict`` event for admins.
    A hard budget without room for the job refuses it (BudgetExceeded) and nothing changes.
    """
    org_id, actor = ctx.org_id, ctx.actor
    try:
        async with db.transaction(org_id) as conn:
            job = found(await jobs_repo.get_for_update(conn, org_id=org_id, job_id=job_id), f"job {job_id}")
            gpu = found(await gpus.get(conn, org_id=org_id, gpu_id=gpu_id), f"GPU {gpu_id}")
            if job.status is not JobStatus.PENDING:
                raise Conflict(f"job {job_id} is {job.status}, not pending")
            if job.spec.gpu.count == 0:
                raise InvalidInput.at("job_id", f"job {job_id} is CPU-only: it takes no GPU")
            if milli is None:
                milli = job.spec.gpu.milli
            elif milli != job.spec.gpu.milli:  # the agent runs the share the job asked for
                raise InvalidInput.at("milli", f"job {job_id} asks for {job.spec.gpu.milli} of 1000, not {milli}")
            await transition_job(conn, job, JobStatus.ALLOCATED, host_id=gpu.host_id, actor=actor)
            allocation = await allocations.allocate_gpu(
                conn,
                org_id=org_id,
                gpu_id=gpu_id,
                job_id=job_id,
                host_id=gpu.host_id,
                attempt=job.attempt,
                milli=milli,
            )
            # After the job, host and GPU rows: the scheduler's lock order (budgets come last).
            await budgets.admit(
                conn,
                org_id,
                user_id=job.submitted_by,
                labels=job.spec.labels,
                estimate=job.cost_estimate,
                placing=job.id,
            )
            data = {"job_id": str(job_id), "gpu_id": str(gpu_id), "milli": milli}
            await events.record(conn, ctx, "allocation", allocation.id, "allocation.created", data)
            return allocation
    except asyncpg.PostgresError as exc:
        if exc.sqlstate not in gpus.CAPACITY_ERRORS:
            raise
        async with db.transaction(org_id) as conn:
            data = {"job_id": str(job_id), "gpu_id": str(gpu_id), "milli": milli, "error": str(exc)}
            await events.record(conn, ctx, "allocation", job_id, "allocation.conflict", data)
        raise Conflict(f"GPU {gpu_id} cannot take job {job_id} now: {exc}") from exc
