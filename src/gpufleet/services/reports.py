"""What agents report about the work they run: started, exited, and (after a restart) what they know.

Every report names (job, attempt). It is applied only while that attempt is the job's current
one on the reporting host; anything else is ``StaleAttempt`` (409) and changes nothing, which is
what keeps a job from being believed running twice after a partition (DESIGN.md decision 8).
A report resent after a lost reply is recognised (the attempt's recorded outcome) and changes
nothing either. The job row is locked first, so reports, cancels and the reaper serialise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

from gpufleet import states
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.execution import (
    EXIT_STATUS_LOST,
    HOST_STOPPED,
    OUTCOMES,
    PROCESS_LOST,
    ExecutionPolicy,
    ExitReport,
    OutcomeStatus,
    ReconcileDecision,
    ReconcileEntry,
    ReconcileResult,
)
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.jobs import Job, JobStatus
from gpufleet.errors import InvalidInput, StaleAttempt
from gpufleet.repo import execution as repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo.execution import AttemptRecord
from gpufleet.services.assignments import DEFAULT_POLICY, judge
from gpufleet.services.hosts import ensure_current
from gpufleet.services.transitions import transition_job

MAX_REASON = 2000
J = JobStatus


def stale_attempt(job_id: UUID, attempt: int, why: str, job: Job | None = None) -> StaleAttempt:
    return StaleAttempt(
        f"attempt {attempt} of job {job_id} is not current on this host ({why}); stop it and report nothing more",
        job_id=str(job_id),
        attempt=attempt,
        current_attempt=job.attempt if job else None,
    )


def fence(job: Job | None, identity: HostIdentity, job_id: UUID, attempt: int) -> Job:
    if job is None:
        raise stale_attempt(job_id, attempt, "no such job")
    if job.host_id != identity.host_id:
        raise stale_attempt(job_id, attempt, "the job is not placed on this host", job)
    if job.attempt != attempt:
        raise stale_attempt(job_id, attempt, f"the job is on attempt {job.attempt}", job)
    return job


def check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidInput("attempt must be a whole number >= 1", field="attempt")


def check_started(attempt: int, pid: int | None) -> None:
    check_attempt(attempt)
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31):
        raise InvalidInput("pid must be a positive whole number", field="pid")


def clean_outcome(outcome: ExitReport) -> ExitReport:
    if outcome.status not in OUTCOMES:
        raise InvalidInput(f"status must be one of {', '.join(sorted(OUTCOMES))}", field="status")
    for name, value in (("exit_code", outcome.exit_code), ("signal", outcome.signal)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**31 - 1):
            raise InvalidInput(f"{name} must be a whole number", field=name)
    reason = (outcome.reason or "").replace("\x00", "")[:MAX_REASON]
    return ExitReport(outcome.status, outcome.exit_code, outcome.signal, reason or outcome.status)


# ------------------------------------------------------------------------------ started


async def report_started(
    db: Database, identity: HostIdentity, job_id: UUID, attempt: int, *, pid: int | None = None
) -> Job:
    """allocated -> running (event ``job.running``); running already: returned unchanged."""
    check_started(attempt, pid)
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)
        job = fence(
            await jobs_repo.get_for_update(conn, org_id=identity.org_id, job_id=job_id), identity, job_id, attempt
        )
        if job.status is J.RUNNING:
            return job
        if job.status is not J.ALLOCATED:
            raise stale_attempt(job_id, attempt, f"the job is {job.status}", job)
        return await start(conn, job, identity, pid=pid)


async def start(
    conn: Conn, job: Job, identity: HostIdentity, *, pid: int | None = None, note: str | None = None
) -> Job:
    moved = await transition_job(
        conn,
        job,
        J.RUNNING,
        actor=identity.actor,
        data={"host_id": str(identity.host_id), "pid": pid, "note": note},
    )
    await repo.mark_started(
        conn, org_id=job.organization_id, job_id=job.id, attempt=job.attempt, host_id=identity.host_id, pid=pid
    )
    return moved


# ------------------------------------------------------------------------------ exit


async def report_exit(
    db: Database,
    identity: HostIdentity,
    job_id: UUID,
    attempt: int,
    outcome: ExitReport,
    *,
    policy: ExecutionPolicy = DEFAULT_POLICY,
) -> Job:
    """The attempt ended: succeeded / failed (retried per policy) / cancelled / timed_out /
    interrupted (its host stopped it: requeued per the host-loss policy, else failed).

    Returns the job as it is now: terminal, or ``pending`` on its next attempt after a retry.
    """
    check_attempt(attempt)
    outcome = clean_outcome(outcome)
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)
        job = await jobs_repo.get_for_update(conn, org_id=identity.org_id, job_id=job_id)
        if job is None:
            raise stale_attempt(job_id, attempt, "no such job")
        return await apply_exit(conn, job, identity, attempt, outcome)


def target_of(job: Job, outcome: ExitReport) -> JobStatus:
    """The status an outcome moves the job to. A stop the server did not ask for is a failure
    (an ``interrupted`` one is first offered a retry, as a host loss: ``apply_exit``)."""
    if outcome.status == "succeeded":
        return J.SUCCEEDED
    if outcome.status in ("cancelled", "interrupted") and job.cancel_requested_at is not None:
        return J.CANCELLED
    if outcome.status == "timed_out" and job.spec.max_runtime_s is not None:
        return J.TIMED_OUT
    return J.FAILED


async def apply_exit(conn: Conn, job: Job, identity: HostIdentity, attempt: int, outcome: ExitReport) -> Job:
    """``report_exit`` on a locked job; raises StaleAttempt before writing anything."""
    record = await repo.get_attempt(conn, org_id=job.organization_id, job_id=job.id, attempt=attempt)
    return await apply_exit_on(conn, job, identity, attempt, outcome, record)


async def apply_exit_on(
    conn: Conn, job: Job, identity: HostIdentity, attempt: int, outcome: ExitReport, record: AttemptRecord | None
) -> Job:
    """``apply_exit`` given the attempt's row as read under the job's lock (a batch reads them all at once)."""
    if record is not None and record.reported_by == "agent" and record.host_id == identity.host_id:
        if record.outcome == outcome.status:
            return job  # the same report again: its reply was lost
        raise stale_attempt(job.id, attempt, f"its exit was already reported as {record.outcome}", job)
    job = fence(job, identity, job.id, attempt)
    target = target_of(job, outcome)
    if job.status in states.JOB_TERMINAL:
        if job.status is target:
            return job  # the server already ended it so (e.g. a silent agent's cancel)
        raise stale_attempt(job.id, attempt, f"the job already ended as {job.status}", job)
    if job.status not in (J.ALLOCATED, J.RUNNING):
        raise stale_attempt(job.id, attempt, f"the job is {job.status}", job)
    actor = identity.actor
    if job.status is J.ALLOCATED and not (target is J.CANCELLED or (target is J.FAILED and outcome.start_failure)):
        job = await start(conn, job, identity, note="reported with its exit")  # the start report was lost
    await repo.record_outcome(
        conn,
        org_id=job.organization_id,
        job_id=job.id,
        attempt=attempt,
        host_id=identity.host_id,
        outcome=outcome,
        reported_by="agent",
    )
    data: dict[str, Any] = {"exit_code": outcome.exit_code, "signal": outcome.signal, "host_id": str(identity.host_id)}
    if target is J.FAILED and outcome.status == "interrupted":
        # Its host stopped it: nothing the job did, so the host-loss policy decides, as for a lost host.
        data["cause"] = HOST_STOPPED
        if may_retry(job, on="host_loss"):
            return await requeue(
                conn, job, reason=f"attempt {job.attempt} {outcome.reason}", cause=HOST_STOPPED, actor=actor, data=data
            )
    elif target is J.FAILED and may_retry(job, on="failure"):
        return await requeue(
            conn, job, reason=f"attempt {job.attempt} failed: {outcome.reason}", cause="failed", actor=actor, data=data
        )
    return await transition_job(
        conn,
        job,
        target,
        reason=outcome.reason,
        actor=actor,
        data=data,
        exit_code=outcome.exit_code,
        exit_signal=outcome.signal,
    )


def may_retry(job: Job, *, on: Literal["failure", "host_loss"]) -> bool:
    """The job's retry policy: attempts left, the cause covered, and nobody asked to cancel it."""
    allowed = job.spec.retry_on_failure if on == "failure" else job.spec.retry_on_host_loss
    return allowed and job.attempt < job.spec.max_attempts and job.cancel_requested_at is None


async def requeue(
    conn: Conn, job: Job, *, reason: str, cause: str, actor: str, data: dict[str, Any] | None = None
) -> Job:
    """Back to ``pending`` as attempt + 1 (event ``job.requeued``); the ledger releases the old one."""
    return await transition_job(
        conn,
        job,
        J.PENDING,
        reason=reason,
        actor=actor,
        event_type="job.requeued",
        data={"cause": cause, "previous_attempt": job.attempt, **(data or {})},
        attempt=job.attempt + 1,
    )


async def end_lost(conn: Conn, job: Job, *, reason: str, cause: str, actor: str, requeue_ok: bool = True) -> Job:
    """The server ends an attempt whose process is gone or unreachable: cancelled if a cancel was
    requested, requeued if the job's policy allows it (and ``requeue_ok``), else failed."""
    status: OutcomeStatus
    if job.cancel_requested_at is not None:
        moved = await transition_job(conn, job, J.CANCELLED, reason=f"cancelled ({reason})", actor=actor)
        status = "cancelled"
    elif requeue_ok and may_retry(job, on="host_loss"):
        moved = await requeue(conn, job, reason=reason, cause=cause, actor=actor)
        status = "failed"
    else:
        moved = await transition_job(conn, job, J.FAILED, reason=reason, actor=actor, data={"cause": cause})
        status = "failed"
    await record_server_outcome(conn, job, status, reason=reason)
    return moved


async def record_server_outcome(conn: Conn, job: Job, status: OutcomeStatus, *, reason: str) -> None:
    """The outcome of ``job``'s attempt when the server ends it (``job`` as it was before the end:
    its attempt and host)."""
    await repo.record_outcome(
        conn,
        org_id=job.organization_id,
        job_id=job.id,
        attempt=job.attempt,
        host_id=job.host_id,
        outcome=ExitReport(status, reason=reason),
        reported_by="server",
    )


# ------------------------------------------------------------------------------ agent restart


async def reconcile(
    db: Database,
    identity: HostIdentity,
    entries: Sequence[ReconcileEntry],
    *,
    policy: ExecutionPolicy = DEFAULT_POLICY,
) -> ReconcileResult:
    """A restarted agent says what it still runs and what ended while it was down.

    Alive attempts: ``continue`` if current on this host (an ``allocated`` one becomes running),
    else ``kill`` (cancelled / timed_out / fenced). Ended ones: their outcome is applied like
    ``report_exit`` (no outcome: failed, exit status lost) and the decision is ``forget``. Jobs
    running here that the agent does not know: requeued per ``retry_on_host_loss``, else failed
    ("agent restarted; process not found"). Allocated ones it does not know are delivered again.
    """
    for e in entries:
        check_attempt(e.attempt)
    cleaned = [
        ReconcileEntry(e.job_id, e.attempt, e.alive, clean_outcome(e.outcome) if e.outcome else None) for e in entries
    ]
    org_id = identity.org_id
    decisions: list[ReconcileDecision] = []
    lost: list[UUID] = []
    async with db.transaction(org_id) as conn:
        await ensure_current(conn, identity)  # a superseded agent's "I run nothing" must change nothing
        active = await repo.active_on_host(conn, org_id=org_id, host_id=identity.host_id)
        for job_id in sorted(set(active) | {e.job_id for e in cleaned}):  # the lock order: by id
            await jobs_repo.get_for_update(conn, org_id=org_id, job_id=job_id)
        for e in cleaned:
            async with conn.transaction():  # a savepoint per entry
                decisions.append(await _reconcile_one(conn, identity, e, policy))
        known = {(e.job_id, e.attempt) for e in cleaned}
        for job_id in active:
            job = await jobs_repo.get(conn, org_id=org_id, job_id=job_id)
            if job is None or job.status is not J.RUNNING or job.host_id != identity.host_id:
                continue
            if (job_id, job.attempt) in known:
                continue
            await end_lost(conn, job, reason=PROCESS_LOST, cause="process_lost", actor=identity.actor)
            lost.append(job_id)
    return ReconcileResult(decisions, lost)


async def _reconcile_one(
    conn: Conn, identity: HostIdentity, e: ReconcileEntry, policy: ExecutionPolicy
) -> ReconcileDecision:
    org_id = identity.org_id
    job = await jobs_repo.get(conn, org_id=org_id, job_id=e.job_id)
    if e.alive:
        if (
            job is not None
            and job.status is J.ALLOCATED
            and job.host_id == identity.host_id
            and job.attempt == e.attempt
        ):
            await start(conn, job, identity, note="adopted after an agent restart")
            return ReconcileDecision(e.job_id, e.attempt, "continue")
        found = await repo.run_states(conn, org_id=org_id, job_ids=[e.job_id])
        order = judge(found.get(e.job_id), identity.host_id, e.job_id, e.attempt, policy)
        if order is None:
            return ReconcileDecision(e.job_id, e.attempt, "continue")
        return ReconcileDecision(e.job_id, e.attempt, "kill", order.reason, order.grace_s)
    outcome = e.outcome or ExitReport("failed", reason=EXIT_STATUS_LOST)
    if job is None:
        return ReconcileDecision(e.job_id, e.attempt, "forget", "no such job")
    try:
        await apply_exit(conn, job, identity, e.attempt, outcome)
    except StaleAttempt as exc:
        return ReconcileDecision(e.job_id, e.attempt, "forget", exc.message)
    return ReconcileDecision(e.job_id, e.attempt, "forget")
