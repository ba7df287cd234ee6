"""Jobs: the sketch's create_gpu_job / get_gpu_jobs, and guarded status transitions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.jobs import GpuRequirement, Job, JobSpec, JobStatus
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, from_row, mapper, optional

# The columns written from a JobSpec's attribute of the same name; the GPU requirement's four after them.
_SPEC_COLUMNS = (
    "name",
    "command",
    "script",
    "model_type",
    "env",
    "working_dir",
    "labels",
    "priority",
    "cpu_milli",
    "ram_mb",
    "max_runtime_s",
    "retry_on_host_loss",
    "retry_on_failure",
    "max_attempts",
)
_GPU_COLUMNS = ("gpu_count", "gpu_milli", "min_memory_mb", "gpu_models")  # GpuRequirement, in its order

# Columns a transition may set besides status; anything else is a programming error.
_TRANSITION_FIELDS = frozenset(
    {
        "status_reason",
        "pending_reason",
        "host_id",
        "attempt",
        "exit_code",
        "exit_signal",
        "cost",
    }
)


_STAMPS = {
    JobStatus.PENDING: ", queued_at = now(), host_id = null",
    JobStatus.ALLOCATED: ", allocated_at = now()",
    JobStatus.RUNNING: ", started_at = now()",
    **{
        s: ", finished_at = now()"
        for s in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.TIMED_OUT,
            JobStatus.ALLOCATION_FAILED,
        )
    },
}


def gpu_requirement(row: Any) -> GpuRequirement:
    """A job row's GPU requirement (its four GPU columns); repo/scheduling.py reads pending jobs by it too."""
    return GpuRequirement(row["gpu_count"], row["gpu_milli"], row["min_memory_mb"], tuple(row["gpu_models"]))


_spec = mapper(JobSpec, gpu=from_row(gpu_requirement))
# The columns later migrations added (cancel_requested_at, cost_estimate, kind) read with a default
# when a row lacks them, as they always have.
_job = mapper(
    Job,
    status=JobStatus,
    spec=from_row(_spec),
    cancel_requested_at=optional(),
    cost_estimate=optional(),
    kind=optional("job"),
)
_jobs = Table(
    "jobs",
    _job,
    insert=", ".join(("organization_id", "submitted_by", "kind", "cost_estimate", *_SPEC_COLUMNS, *_GPU_COLUMNS)),
)


async def create_gpu_job(
    conn: Conn,
    *,
    org_id: UUID,
    spec: JobSpec,
    submitted_by: UUID | None = None,
    kind: str = "job",
    cost_estimate: Decimal | None = None,
) -> Job:
    """Insert a job in ``pending``; status, timestamps and tenant are the server's, never the client's."""
    gpu = spec.gpu
    values: list[Any] = [getattr(spec, c) for c in _SPEC_COLUMNS]
    values += [gpu.count, gpu.milli, gpu.memory_min_mib, list(gpu.models)]
    return await _jobs.insert(conn, org_id, submitted_by, kind, cost_estimate, *values)


async def get(conn: Conn, *, org_id: UUID, job_id: UUID) -> Job | None:
    return await _jobs.get(conn, org_id, job_id)


async def get_for_key_share(conn: Conn, *, org_id: UUID, job_id: UUID) -> Job | None:
    """The job, its row share-locked as a foreign key to it would be, taken *before* a row that
    refers to the job (an attempt) is locked: the order the reaper and exit reports take them (job,
    then attempt). Their NO KEY UPDATE does not block it, so an upload does not wait for them on the
    job; a FOR UPDATE (a delete) is waited for before the attempt is locked, never deadlocked with."""
    return await _jobs.get(conn, org_id, job_id, lock="key share")


async def get_for_update(conn: Conn, *, org_id: UUID, job_id: UUID) -> Job | None:
    # NO KEY UPDATE: excludes other writers of the job, yet lets rows that refer to it (logs, attempts,
    # allocations) check their foreign key meanwhile; a job's id never changes.
    return await _jobs.get(conn, org_id, job_id, lock="no key update")


async def get_gpu_jobs(conn: Conn, *, org_id: UUID, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
    """The sketch's job listing: newest first, optionally one status, at most ``limit``."""
    rows = await conn.fetch(
        """select * from jobs
            where organization_id = $1 and ($2::text is null or status = $2)
            order by created_at desc, id desc limit $3""",
        org_id,
        status.value if status else None,
        limit,
    )
    return [_job(r) for r in rows]


async def transition(
    conn: Conn,
    *,
    org_id: UUID,
    job_id: UUID,
    allowed_from: Sequence[JobStatus],
    to: JobStatus,
    **fields: Any,
) -> Job | None:
    """Move a job to ``to`` only if it is in one of ``allowed_from``; ``None`` when it was not."""
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"not a transition field: {sorted(unknown)}")
    names = sorted(fields)
    sets = "".join(f", {name} = ${i}" for i, name in enumerate(names, start=5))
    # Timestamps come from the database clock, never from a client or a replica's clock.
    stamp = _STAMPS.get(to, "")
    row = await conn.fetchrow(
        f"""update jobs set status = $4{sets}{stamp}
             where organization_id = $1 and id = $2 and status = any($3::text[])
         returning *""",
        org_id,
        job_id,
        [s.value for s in allowed_from],
        to.value,
        *(fields[n] for n in names),
    )
    return _job(row) if row else None


async def list_page(
    conn: Conn,
    *,
    org_id: UUID,
    statuses: Sequence[JobStatus] | None = None,
    labels: dict[str, str] | None = None,
    before: tuple[datetime, UUID] | None = None,
    limit: int = 50,
    kinds: Sequence[str] | None = ("job",),
) -> list[Job]:
    """Newest first: ``limit + 1`` jobs at most past ``before`` (``keyset.page``).
    ``kinds``: batch jobs only by default; None: every kind (replicas too)."""
    sql = """select * from jobs
              where organization_id = $1
                and ($2::text[] is null or status = any($2::text[]))
                and ($3::jsonb is null or labels @> $3::jsonb)
                and ($4::text[] is null or kind = any($4::text[]))"""
    rows = await keyset.page(
        conn,
        sql,
        org_id,
        [s.value for s in statuses] if statuses else None,
        labels or None,
        list(kinds) if kinds is not None else None,
        after=before,
        limit=limit,
    )
    return [_job(r) for r in rows]


async def request_cancel(conn: Conn, *, org_id: UUID, job_id: UUID) -> Job | None:
    """Mark a running job for cancellation (first request wins); None if it is not running."""
    row = await conn.fetchrow(
        """update jobs set cancel_requested_at = coalesce(cancel_requested_at, now())
            where organization_id = $1 and id = $2 and status = 'running'
        returning *""",
        org_id,
        job_id,
    )
    return _job(row) if row else None


async def lock_many(conn: Conn, *, org_id: UUID, job_ids: Sequence[UUID]) -> dict[UUID, Job]:
    """The tenant's jobs among ``job_ids``, locked (NO KEY UPDATE, as ``get_for_update``) in one
    statement and in id order, the lock order every multi-job writer takes; another tenant's are absent."""
    rows = await conn.fetch(
        """select * from jobs where organization_id = $1 and id = any($2::uuid[])
            order by id for no key update""",
        org_id,
        sorted(set(job_ids)),
    )
    return {r["id"]: _job(r) for r in rows}


async def transition_many(
    conn: Conn, *, org_id: UUID, job_ids: Sequence[UUID], allowed_from: Sequence[JobStatus], to: JobStatus
) -> dict[UUID, Job]:
    """``transition`` for several jobs in one statement (no extra fields); the ones that moved."""
    if not job_ids:
        return {}
    rows = await conn.fetch(
        f"""update jobs set status = $4{_STAMPS.get(to, "")}
             where organization_id = $1 and id = any($2::uuid[]) and status = any($3::text[])
         returning *""",
        org_id,
        list(job_ids),
        [s.value for s in allowed_from],
        to.value,
    )
    return {r["id"]: _job(r) for r in rows}


async def finish_many(
    conn: Conn,
    *,
    org_id: UUID,
    allowed_from: Sequence[JobStatus],
    ends: Sequence[tuple[UUID, JobStatus, str | None, int | None, int | None]],
) -> dict[UUID, Job]:
    """Several jobs to a terminal status in one statement: ``(job_id, to, reason, exit_code, signal)``
    each, guarded as ``transition``; the ones that moved."""
    if not ends:
        return {}
    ids, to, reasons, codes, signals = (list(col) for col in zip(*ends, strict=True))
    rows = await conn.fetch(
        """update jobs j set status = u.s, status_reason = u.r, exit_code = u.c, exit_signal = u.g, finished_at = now()
             from unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::int[]) as u(id, s, r, c, g)
            where j.organization_id = $1 and j.id = u.id and j.status = any($7::text[])
        returning j.*""",
        org_id,
        ids,
        [s.value for s in to],
        reasons,
        codes,
        signals,
        [s.value for s in allowed_from],
    )
    return {r["id"]: _job(r) for r in rows}


async def pending_in_order(conn: Conn, *, org_id: UUID, limit: int) -> tuple[int, list[Job]]:
    """(how many jobs wait, the first ``limit`` of them) in the order the scheduler considers them."""
    total = await conn.fetchval("select count(*) from jobs where organization_id = $1 and status = 'pending'", org_id)
    rows = await conn.fetch(
        """select * from jobs where organization_id = $1 and status = 'pending'
            order by priority desc, queued_at, id limit $2""",
        org_id,
        limit,
    )
    return int(total), [_job(r) for r in rows]
