"""Job state changes: the transition table, the guarded UPDATE and the event row, in one transaction."""

from __future__ import annotations

from typing import Any

from gpufleet import states
from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.jobs import Job, JobStatus
from gpufleet.errors import InvalidTransition
from gpufleet.repo import events
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services import replica_end


async def transition_job(
    conn: Conn,
    job: Job,
    to: JobStatus,
    *,
    reason: str | None = None,
    actor: str | None = None,
    data: dict[str, Any] | None = None,
    event_type: str | None = None,
    **fields: Any,
) -> Job:
    """Move ``job`` to ``to`` if the table allows it from its *current* database state.

    The Python check gives a clear message early; the SQL guard (``status = ANY(sources)``) is
    what holds when another writer changed the job since it was read. ``event_type`` names the
    event when the default ``job.<to>`` would say less (``job.requeued`` for a move to pending).
    """
    states.check(states.JOB_TRANSITIONS, job.status, to)
    if to is JobStatus.PENDING and fields.get("attempt") != job.attempt + 1:
        # The old attempt's allocations stay as history under its number; placing the job again
        # under the same number would collide with them. Every requeue is the next attempt.
        raise ValueError(f"requeueing job {job.id} needs attempt={job.attempt + 1}")
    if reason is not None:
        fields["status_reason"] = reason
    moved = await jobs_repo.transition(
        conn,
        org_id=job.organization_id,
        job_id=job.id,
        allowed_from=states.sources(states.JOB_TRANSITIONS, to),
        to=to,
        **fields,
    )
    if moved is None:
        current = await jobs_repo.get(conn, org_id=job.organization_id, job_id=job.id)
        now = current.status if current else "deleted"
        raise InvalidTransition(f"job {job.id} is {now}; it cannot go to {to}")
    await events.append(
        conn,
        job.organization_id,
        "job",
        job.id,
        event_type or f"job.{to.value}",
        {"from": job.status.value, "to": to.value, "reason": reason, "attempt": moved.attempt, **(data or {})},
        actor=actor,
    )
    if moved.kind == "replica" and to in states.JOB_TERMINAL:
        await replica_end.on_job_ended(conn, moved)  # its replica stops; its in-flight predictions end
    return moved
