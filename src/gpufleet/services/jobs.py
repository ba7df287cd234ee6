"""Jobs as use cases: submit, cancel, get, list (keyset pages), events, wait.

Submission only queues: the job is inserted ``pending`` with a ``job.submitted`` event, and the
insert wakes the scheduler (a trigger NOTIFYs at commit). Whether a job could *ever* run is
decided by the scheduler's first look, not here: it alone sees the organization's whole
inventory in one consistent place, and the same rule then also covers jobs queued again after a
host was lost. Such a job becomes ``allocation_failed`` within one cycle, with the reason.
Another organization's job is always NotFound, never Forbidden.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from uuid import UUID

from gpufleet import states
from gpufleet.backoff import Backoff
from gpufleet.db.pool import Connection, Database
from gpufleet.domain.events import Event
from gpufleet.domain.jobs import Job, JobPage, JobSpec, JobStatus
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput, InvalidTransition
from gpufleet.pagination import decode_cursor, paginate
from gpufleet.repo import events as events_repo
from gpufleet.repo import jobs as repo
from gpufleet.services import budgets, costs
from gpufleet.services.job_spec import validate
from gpufleet.services.lookup import found
from gpufleet.services.transitions import transition_job
from gpufleet.services.wakeups import WakeHub

KINDS = ("job", "replica", "all")


async def submit(db: Database, ctx: TenantContext, spec: JobSpec) -> Job:
    """Validate and queue a job; the scheduler is woken when this transaction commits."""
    async with db.transaction(ctx.org_id, user_id=ctx.user_id) as conn:
        return await submit_in(conn, ctx, spec)


async def submit_in(conn: Connection, ctx: TenantContext, spec: JobSpec) -> Job:
    """``submit`` inside the caller's tenant transaction (an idempotent request's, services/idempotency.py)."""
    org_id, submitted_by = ctx.org_id, ctx.user_id
    clean = validate(spec)
    estimate = await costs.estimate(conn, org_id, clean)
    await budgets.admit(conn, org_id, user_id=submitted_by, labels=clean.labels, estimate=estimate)
    job = await repo.create_gpu_job(conn, org_id=org_id, spec=clean, submitted_by=submitted_by, cost_estimate=estimate)
    await record_submitted(conn, job, actor=ctx.actor)
    return job


async def record_submitted(conn: Connection, job: Job, *, actor: str | None) -> None:
    """The ``job.submitted`` event of a new pending job (a user's, or a deployment's replica)."""
    gpu = job.spec.gpu
    await events_repo.append(
        conn,
        job.organization_id,
        "job",
        job.id,
        "job.submitted",
        {
            "to": JobStatus.PENDING.value,
            "attempt": job.attempt,
            "gpu_count": gpu.count,
            "gpu_milli": gpu.milli,
            "gpu_models": list(gpu.models),
        },
        actor=actor,
    )


async def get(db: Database, ctx: TenantContext, job_id: UUID) -> Job:
    async with db.transaction(ctx.org_id) as conn:
        job = found(await repo.get(conn, org_id=ctx.org_id, job_id=job_id), f"job {job_id}")
    return job


async def cancel(db: Database, ctx: TenantContext, job_id: UUID, *, reason: str | None = None) -> Job:
    """Cancel a job.

    * pending or allocated: ``cancelled`` at once; the ledger trigger releases its GPUs, CPU and
      RAM in the same transaction.
    * running: ``cancel_requested_at`` is set (event ``job.cancel_requested``) and the job is
      returned still running; the agent kills the process and reports it ``cancelled``.
    * already cancelled: returned unchanged (cancelling twice is not an error).

    ``reason``: why, when the server cancels (a budget at 100 %); default "cancelled by <actor>".
    * otherwise finished: InvalidTransition (409).
    """
    org_id, actor = ctx.org_id, ctx.actor
    async with db.transaction(org_id) as conn:
        job = found(await repo.get_for_update(conn, org_id=org_id, job_id=job_id), f"job {job_id}")
        if job.status in (JobStatus.PENDING, JobStatus.ALLOCATED):
            return await transition_job(
                conn, job, JobStatus.CANCELLED, reason=reason or f"cancelled by {actor or 'a user'}", actor=actor
            )
        if job.status is JobStatus.RUNNING:
            if job.cancel_requested_at is not None:
                return job
            marked = await repo.request_cancel(conn, org_id=org_id, job_id=job_id)
            assert marked is not None  # the row is locked and running
            await events_repo.record(
                conn,
                ctx,
                "job",
                job_id,
                "job.cancel_requested",
                {
                    "attempt": job.attempt,
                    "host_id": str(job.host_id) if job.host_id else None,
                    **({"reason": reason} if reason else {}),
                },
            )
            return marked
        if job.status is JobStatus.CANCELLED:
            return job
        raise InvalidTransition(f"job {job_id} already finished ({job.status}); there is nothing to cancel")


async def list_jobs(
    db: Database,
    ctx: TenantContext,
    *,
    status: JobStatus | Sequence[JobStatus] | None = None,
    labels: dict[str, str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    kind: str = "job",
) -> JobPage:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page (stable under inserts).
    ``kind``: ``job`` (batch jobs, the default), ``replica`` (deployments' replicas) or ``all``."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    statuses = [status] if isinstance(status, JobStatus) else list(status) if status else None
    if labels is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidInput("labels must map strings to strings", field="labels")
    before = decode_cursor(cursor)
    async with db.transaction(ctx.org_id) as conn:
        rows = await repo.list_page(
            conn,
            org_id=ctx.org_id,
            statuses=statuses,
            labels=labels,
            before=before,
            limit=limit,
            kinds=None if kind == "all" else (kind,),
        )
    items, next_cursor = paginate(rows, limit)
    return JobPage(items=items, next_cursor=next_cursor)


async def events(
    db: Database, ctx: TenantContext, job_id: UUID, *, after_seq: int = 0, limit: int = 100
) -> list[Event]:
    """The job's history in order: ``limit + 1`` events at most after ``after_seq``, the last ``seq``
    already seen (``keyset.page``)."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        found(await repo.get(conn, org_id=org_id, job_id=job_id), f"job {job_id}")
        return await events_repo.for_entity(
            conn, org_id=org_id, entity_type="job", entity_id=job_id, after_seq=after_seq, limit=limit
        )


async def wait(
    db: Database,
    ctx: TenantContext,
    job_id: UUID,
    timeout_s: float,
    *,
    first_delay: float = 0.05,
    max_delay: float = 1.0,
    hub: WakeHub | None = None,
) -> Job:
    """The job once terminal, or as it is when ``timeout_s`` seconds have passed or the server
    stops (``hub.draining``) (check ``status``).

    Polls with exponential backoff (50 ms doubling to 1 s): one indexed read per poll, on any
    deployment (LISTEN is not available behind a transaction pooler), and never a busy loop.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    backoff = Backoff(first_delay, cap=max_delay)
    while True:
        job = await get(db, ctx, job_id)
        left = deadline - time.monotonic()
        if job.status in states.JOB_TERMINAL or left <= 0 or (hub is not None and hub.draining):
            return job
        await asyncio.sleep(min(backoff.next(), left))
