"""A batch of an agent's reports (starts, log uploads, exits) applied in one transaction.

An agent with many short jobs would otherwise send three requests per job, each its own
transaction queued behind the others; a batch costs one commit however many jobs it names.
Each item is judged exactly as its single route judges it (services/reports.py, services/logs.py):
fenced per (job, attempt) on the host, idempotent when resent. A stale or invalid item is
refused alone and changes nothing; the batch's other items apply. The jobs are locked in one
statement, in id order (the lock order of every multi-job writer), before anything is written.

Order inside a batch: starts, then logs, then exits, so a job that ran for a millisecond can be
reported started and ended in one batch, and the logs sent with its exit are stored before it.
Starts of allocated jobs, and the plain exits (a running job that succeeded, or failed with no
retry left), are applied set-based: one UPDATE of the jobs, one INSERT of their events, one of
their attempt rows. The other exits (retries, requeues, replica ends, a start lost before its
exit, resends) go one by one through ``apply_exit_on``, inside the same transaction. The database
triggers (allocations released, costs metered, wakeups, webhook fan-out) fire per row either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from gpufleet import states
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.execution import (
    BatchResult,
    ExecutionPolicy,
    ExitItem,
    ItemResult,
    LogsItem,
    ReportBatch,
    StartedReport,
)
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.jobs import Job, JobStatus
from gpufleet.errors import InvalidInput, InvalidTransition, StaleAttempt
from gpufleet.repo import events as events_repo
from gpufleet.repo import execution as exec_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import logs as logs_repo
from gpufleet.services import logs, reports
from gpufleet.services.assignments import DEFAULT_POLICY
from gpufleet.services.hosts import ensure_current

J = JobStatus
Records = dict[tuple[UUID, int], exec_repo.AttemptRecord | None]


class _Item(Protocol):
    @property
    def job_id(self) -> UUID: ...
    @property
    def attempt(self) -> int: ...


T = TypeVar("T", bound=_Item)


def _stale(exc: StaleAttempt, job_id: UUID, attempt: int) -> ItemResult:
    current = exc.extra.get("current_attempt")
    return ItemResult(job_id, attempt, "stale", exc.message, current if isinstance(current, int) else None)


def _invalid(exc: InvalidInput, job_id: UUID, attempt: int, where: str) -> ItemResult:
    field = exc.extra.get("field")
    return ItemResult(job_id, attempt, "invalid", exc.message, field=f"{where}.{field}" if field else where)


def _checked(items: Sequence[T], where: str, check: Callable[[T], T]) -> tuple[dict[int, T], dict[int, ItemResult]]:
    """Items whose values pass ``check`` (by index), and the answers of those that do not."""
    good: dict[int, T] = {}
    bad: dict[int, ItemResult] = {}
    for i, item in enumerate(items):
        try:
            good[i] = check(item)
        except InvalidInput as exc:
            bad[i] = _invalid(exc, item.job_id, item.attempt, f"{where}[{i}]")
    return good, bad


def _check_started(s: StartedReport) -> StartedReport:
    reports.check_started(s.attempt, s.pid)
    return s


def _check_exit(e: ExitItem) -> ExitItem:
    reports.check_attempt(e.attempt)
    return ExitItem(e.job_id, e.attempt, reports.clean_outcome(e.outcome))


def _checker(policy: ExecutionPolicy) -> Callable[[LogsItem], LogsItem]:
    def check(item: LogsItem) -> LogsItem:
        if item.invalid is not None:
            raise InvalidInput(item.invalid[0], field=item.invalid[1])
        return LogsItem(item.job_id, item.attempt, tuple(logs.check_chunks(item.attempt, item.chunks, policy)))

    return check


async def apply_reports(
    db: Database, identity: HostIdentity, batch: ReportBatch, *, policy: ExecutionPolicy = DEFAULT_POLICY
) -> BatchResult:
    """Apply a host's batch; every item answered in its list's order (see the module's docstring)."""
    started, started_bad = _checked(batch.started, "started", _check_started)
    exits, exits_bad = _checked(batch.exits, "exits", _check_exit)
    uploads, logs_bad = _checked(batch.logs, "logs", _checker(policy))
    ids = {s.job_id for s in started.values()} | {e.job_id for e in exits.values()}
    ids |= {u.job_id for u in uploads.values()}
    org_id = identity.org_id
    started_out: dict[int, ItemResult] = dict(started_bad)
    logs_out: dict[int, ItemResult] = dict(logs_bad)
    exits_out: dict[int, ItemResult] = dict(exits_bad)
    async with db.transaction(org_id) as conn:
        await ensure_current(conn, identity)
        jobs = await jobs_repo.lock_many(conn, org_id=org_id, job_ids=list(ids))
        keys = [(s.job_id, s.attempt) for s in started.values()] + [(u.job_id, u.attempt) for u in uploads.values()]
        keys += [(e.job_id, e.attempt) for e in exits.values()]
        records: Records = dict(await exec_repo.get_attempts(conn, org_id=org_id, keys=keys))
        started_out |= await _starts(conn, identity, jobs, records, started)
        stored = False
        for i, u in uploads.items():
            try:
                ack, wrote = await logs.append_locked(
                    conn,
                    identity,
                    jobs.get(u.job_id),
                    u.job_id,
                    u.attempt,
                    u.chunks,
                    policy,
                    records.get((u.job_id, u.attempt)),
                )
            except StaleAttempt as exc:
                logs_out[i] = _stale(exc, u.job_id, u.attempt)
                continue
            stored = stored or wrote
            logs_out[i] = ItemResult(u.job_id, u.attempt, "applied", ack=ack)
        if stored:
            await logs_repo.notify(conn)
        ended = await _end_many(conn, identity, jobs, records, exits)
        exits_out |= ended
        for i, e in exits.items():
            if i not in ended:
                exits_out[i] = await _exit(conn, identity, jobs, records, e)
    return BatchResult(
        [started_out[i] for i in range(len(batch.started))],
        [exits_out[i] for i in range(len(batch.exits))],
        [logs_out[i] for i in range(len(batch.logs))],
    )


async def _exit(conn: Conn, identity: HostIdentity, jobs: dict[UUID, Job], records: Records, e: ExitItem) -> ItemResult:
    job = jobs.get(e.job_id)
    if job is None:
        return _stale(reports.stale_attempt(e.job_id, e.attempt, "no such job"), e.job_id, e.attempt)
    key = (e.job_id, e.attempt)
    if key in records and records[key] is None:  # this batch already wrote it: read it again
        records[key] = await exec_repo.get_attempt(conn, org_id=job.organization_id, job_id=e.job_id, attempt=e.attempt)
    try:
        jobs[e.job_id] = await reports.apply_exit_on(conn, job, identity, e.attempt, e.outcome, records.get(key))
    except StaleAttempt as exc:
        return _stale(exc, e.job_id, e.attempt)
    records[key] = None
    return ItemResult(e.job_id, e.attempt, "applied")


async def _starts(
    conn: Conn, identity: HostIdentity, jobs: dict[UUID, Job], records: Records, started: dict[int, StartedReport]
) -> dict[int, ItemResult]:
    """allocated -> running for every current attempt at once; running already: applied, unchanged.

    Also applied, unchanged: an attempt this host already reported ended, its start and exit
    having been sent together in a batch whose reply was lost (the single route never sees a
    start after an exit; it would answer 409)."""
    out: dict[int, ItemResult] = {}
    pids: dict[UUID, int | None] = {}
    for i, s in started.items():
        job = jobs.get(s.job_id)
        if logs.own_finished_attempt(records.get((s.job_id, s.attempt)), identity):
            out[i] = ItemResult(s.job_id, s.attempt, "applied")
            continue
        try:
            job = reports.fence(job, identity, s.job_id, s.attempt)
            if job.status is not J.RUNNING and job.status is not J.ALLOCATED:
                raise reports.stale_attempt(s.job_id, s.attempt, f"the job is {job.status}", job)
        except StaleAttempt as exc:
            out[i] = _stale(exc, s.job_id, s.attempt)
            continue
        if job.status is J.ALLOCATED:
            pids.setdefault(s.job_id, s.pid)
        out[i] = ItemResult(s.job_id, s.attempt, "applied")
    if pids:
        jobs |= await start_many(conn, identity, [jobs[j] for j in sorted(pids)], pids)
    return out


async def start_many(
    conn: Conn, identity: HostIdentity, locked: Sequence[Job], pids: dict[UUID, int | None]
) -> dict[UUID, Job]:
    """``reports.start`` for several locked allocated jobs, set-based; the jobs as they are now."""
    for job in locked:
        states.check(states.JOB_TRANSITIONS, job.status, J.RUNNING)
    org_id = identity.org_id
    moved = await jobs_repo.transition_many(
        conn,
        org_id=org_id,
        job_ids=[j.id for j in locked],
        allowed_from=states.sources(states.JOB_TRANSITIONS, J.RUNNING),
        to=J.RUNNING,
    )
    _all_moved(moved, [j.id for j in locked], "go to running")
    host = str(identity.host_id)
    await _job_events(
        conn,
        identity,
        [
            (
                j.id,
                "job.running",
                {
                    "from": j.status.value,
                    "to": J.RUNNING.value,
                    "reason": None,
                    "attempt": moved[j.id].attempt,
                    "host_id": host,
                    "pid": pids.get(j.id),
                    "note": None,
                },
            )
            for j in locked
        ],
    )
    await exec_repo.mark_started_many(
        conn, org_id=org_id, host_id=identity.host_id, started=[(j.id, j.attempt, pids.get(j.id)) for j in locked]
    )
    return moved


def _all_moved(moved: dict[UUID, Job], job_ids: Sequence[UUID], what: str) -> None:
    """A set-based transition moved every job it named: it cannot be otherwise under the lock; the
    SQL guard says so if it is."""
    missed = sorted(str(j) for j in job_ids if j not in moved)
    if missed:
        raise InvalidTransition(f"jobs {', '.join(missed)} cannot {what}")


async def _job_events(conn: Conn, identity: HostIdentity, rows: Sequence[tuple[UUID, str, dict[str, Any]]]) -> None:
    """The events ``(job_id, type, data)`` of the host's jobs a batch moved, in one INSERT, by its agent."""
    org_id = identity.org_id
    await events_repo.append_many(
        conn, [(org_id, "job", job_id, type, data) for job_id, type, data in rows], actor=identity.actor
    )


def _plain_end(job: Job | None, identity: HostIdentity, record: exec_repo.AttemptRecord | None, e: ExitItem) -> bool:
    """The common exit: a running current attempt that succeeded, or failed with no retry left,
    reported for the first time; ``apply_exit_on`` would do one transition and nothing else."""
    if job is None or job.status is not J.RUNNING or job.kind == "replica":
        return False
    if job.host_id != identity.host_id or job.attempt != e.attempt or (record and record.outcome is not None):
        return False
    target = reports.target_of(job, e.outcome)
    if target is J.SUCCEEDED:
        return True
    return target is J.FAILED and e.outcome.status != "interrupted" and not reports.may_retry(job, on="failure")


async def _end_many(
    conn: Conn, identity: HostIdentity, jobs: dict[UUID, Job], records: Records, exits: dict[int, ExitItem]
) -> dict[int, ItemResult]:
    """The plain exits (``_plain_end``) set-based: one UPDATE of the jobs, one INSERT of their
    events, one of their outcomes. A job named twice in the batch goes the single way."""
    named: dict[UUID, int] = {}
    for e in exits.values():
        named[e.job_id] = named.get(e.job_id, 0) + 1
    plain = {
        i: e
        for i, e in exits.items()
        if named[e.job_id] == 1 and _plain_end(jobs.get(e.job_id), identity, records.get((e.job_id, e.attempt)), e)
    }
    if not plain:
        return {}
    targets = {e.job_id: reports.target_of(jobs[e.job_id], e.outcome) for e in plain.values()}
    for e in plain.values():
        states.check(states.JOB_TRANSITIONS, jobs[e.job_id].status, targets[e.job_id])
    allowed = [
        s
        for s in states.sources(states.JOB_TRANSITIONS, J.SUCCEEDED)
        if s in states.sources(states.JOB_TRANSITIONS, J.FAILED)
    ]
    org_id = identity.org_id
    moved = await jobs_repo.finish_many(
        conn,
        org_id=org_id,
        allowed_from=allowed,
        ends=[
            (e.job_id, targets[e.job_id], e.outcome.reason, e.outcome.exit_code, e.outcome.signal)
            for e in plain.values()
        ],
    )
    _all_moved(moved, [e.job_id for e in plain.values()], "end now")
    host = str(identity.host_id)
    await _job_events(
        conn,
        identity,
        [
            (
                e.job_id,
                f"job.{targets[e.job_id].value}",
                {
                    "from": J.RUNNING.value,
                    "to": targets[e.job_id].value,
                    "reason": e.outcome.reason,
                    "attempt": e.attempt,
                    "exit_code": e.outcome.exit_code,
                    "signal": e.outcome.signal,
                    "host_id": host,
                },
            )
            for e in plain.values()
        ],
    )
    await exec_repo.record_outcomes(
        conn,
        org_id=org_id,
        host_id=identity.host_id,
        outcomes=[(e.job_id, e.attempt, e.outcome) for e in plain.values()],
        reported_by="agent",
    )
    jobs |= moved
    return {i: ItemResult(e.job_id, e.attempt, "applied") for i, e in plain.items()}
