"""Running work on hosts: assignments, attempt records, the fencing view of jobs, the reaper's queries.

Tenant functions take ``org_id``; the ones marked *system path* span every tenant and are called
only inside ``Database.system_transaction()`` (the reaper, the polling waker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.execution import AssignedGpu, Assignment, ExitReport
from gpufleet.domain.jobs import JobStatus
from gpufleet.repo.rows import from_row, mapper

# Any constant works as long as every gpufleet process agrees on it (distinct from the others').
REAPER_LOCK = 0x6766_7265_6170_6572 & 0x7FFF_FFFF_FFFF_FFFF


async def assignments_for_host(conn: Conn, *, org_id: UUID, host_id: UUID, limit: int = 100) -> list[Assignment]:
    """Jobs ``allocated`` on the host (placed, not yet reported started), oldest placement first."""
    jobs = await conn.fetch(
        """select id, attempt, name, command, script, env, working_dir, max_runtime_s, gpu_milli,
                  cpu_milli, ram_mb, allocated_at
             from jobs
            where organization_id = $1 and host_id = $2 and status = 'allocated'
            order by allocated_at, id
            limit $3""",
        org_id,
        host_id,
        limit,
    )
    if not jobs:
        return []
    shares = await conn.fetch(
        """select a.job_id, g.id, g.uuid, g.index, g.model, a.milli, a.memory_mb
             from allocations a join gpu_resources g on g.id = a.gpu_id
            where a.organization_id = $1 and a.job_id = any($2::uuid[]) and a.released_at is null
              and a.host_id = $3
            order by g.index""",
        org_id,
        [j["id"] for j in jobs],
        host_id,
    )
    gpus: dict[UUID, list[AssignedGpu]] = {}
    for s in shares:
        gpus.setdefault(s["job_id"], []).append(
            AssignedGpu(s["id"], s["uuid"], s["index"], s["model"], s["milli"], s["memory_mb"])
        )
    return [
        Assignment(
            job_id=j["id"],
            attempt=j["attempt"],
            name=j["name"],
            command=list(j["command"]) if j["command"] is not None else None,
            script=j["script"],
            env=dict(j["env"]),
            working_dir=j["working_dir"],
            max_runtime_s=j["max_runtime_s"],
            gpus=gpus.get(j["id"], []),
            gpu_milli=j["gpu_milli"],
            cpu_milli=j["cpu_milli"],
            ram_mb=j["ram_mb"],
            allocated_at=j["allocated_at"],
        )
        for j in jobs
    ]


async def hosts_with_assignments(conn: Conn, *, host_ids: Sequence[UUID]) -> list[UUID]:
    """System path: which of these hosts have work waiting (the polling waker, one query for all)."""
    rows = await conn.fetch(
        "select distinct host_id from jobs where host_id = any($1::uuid[]) and status = 'allocated'",
        list(host_ids),
    )
    return [r[0] for r in rows]


# ------------------------------------------------------------------------------ fencing view


@dataclass(frozen=True, slots=True)
class RunState:
    """What the server believes of a job, judged by the database clock."""

    job_id: UUID
    status: JobStatus
    attempt: int
    host_id: UUID | None
    cancel_requested: bool
    overdue: bool  # running past max_runtime_s (started_at + max_runtime_s < now())


_run_state = mapper(RunState, status=JobStatus)


def _run_states(rows: Sequence[Any]) -> dict[UUID, RunState]:
    return {state.job_id: state for state in map(_run_state, rows)}


async def run_states(conn: Conn, *, org_id: UUID, job_ids: Sequence[UUID]) -> dict[UUID, RunState]:
    """The tenant's jobs among ``job_ids`` (another tenant's are simply absent)."""
    rows = await conn.fetch(
        """select id as job_id, status, attempt, host_id, cancel_requested_at is not null as cancel_requested,
                  (status = 'running' and max_runtime_s is not null and started_at is not null
                   and started_at + make_interval(secs => max_runtime_s) < now()) as overdue
             from jobs where organization_id = $1 and id = any($2::uuid[])""",
        org_id,
        list(job_ids),
    )
    return _run_states(rows)


async def run_states_any(conn: Conn, *, job_ids: Sequence[UUID]) -> dict[UUID, RunState]:
    """System path: ``run_states`` across tenants, for the wake-up hub's one query for all waiters."""
    rows = await conn.fetch(
        """select id as job_id, status, attempt, host_id, cancel_requested_at is not null as cancel_requested,
                  false as overdue
             from jobs where id = any($1::uuid[])""",
        list(job_ids),
    )
    return _run_states(rows)


async def active_on_host(conn: Conn, *, org_id: UUID, host_id: UUID) -> list[UUID]:
    """Ids of the jobs allocated or running on the host, in id order (the lock order)."""
    rows = await conn.fetch(
        """select id from jobs where organization_id = $1 and host_id = $2 and status in ('allocated', 'running')
            order by id""",
        org_id,
        host_id,
    )
    return [r[0] for r in rows]


# ------------------------------------------------------------------------------ attempts


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    organization_id: UUID
    job_id: UUID
    attempt: int
    host_id: UUID | None
    pid: int | None
    outcome: str | None
    reported_by: str | None
    exit_code: int | None
    exit_signal: int | None
    reason: str | None
    log_next_seq: int
    log_bytes: int
    log_truncated: bool
    ends: dict[str, int]  # stream -> bytes received so far (stored or not)


_attempt = mapper(
    AttemptRecord,
    ends=from_row(lambda r: {"stdout": r["stdout_end"], "stderr": r["stderr_end"], "system": r["system_end"]}),
)


async def get_attempt(
    conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, for_update: bool = False
) -> AttemptRecord | None:
    lock = " for update" if for_update else ""
    row = await conn.fetchrow(
        f"select * from job_attempts where organization_id = $1 and job_id = $2 and attempt = $3{lock}",
        org_id,
        job_id,
        attempt,
    )
    return _attempt(row) if row else None


async def ensure_attempt(conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, host_id: UUID) -> AttemptRecord:
    """The attempt's row, created if missing, locked (concurrent log uploads serialise on it)."""
    await conn.execute(
        """insert into job_attempts (organization_id, job_id, attempt, host_id) values ($1, $2, $3, $4)
           on conflict (job_id, attempt) do nothing""",
        org_id,
        job_id,
        attempt,
        host_id,
    )
    found = await get_attempt(conn, org_id=org_id, job_id=job_id, attempt=attempt, for_update=True)
    assert found is not None
    return found


async def mark_started(conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, host_id: UUID, pid: int | None) -> None:
    await mark_started_many(conn, org_id=org_id, host_id=host_id, started=[(job_id, attempt, pid)])


async def mark_started_many(
    conn: Conn, *, org_id: UUID, host_id: UUID, started: Sequence[tuple[UUID, int, int | None]]
) -> None:
    """``mark_started`` for several ``(job_id, attempt, pid)`` in one statement."""
    if not started:
        return
    job_ids, attempts, pids = (list(col) for col in zip(*started, strict=True))
    await conn.execute(
        """insert into job_attempts (organization_id, job_id, attempt, host_id, pid, started_at)
           select $1, j, a, $2, p, now() from unnest($3::uuid[], $4::int[], $5::int[]) as u(j, a, p)
           on conflict (job_id, attempt) do update
              set pid = coalesce(excluded.pid, job_attempts.pid),
                  started_at = coalesce(job_attempts.started_at, excluded.started_at)""",
        org_id,
        host_id,
        job_ids,
        attempts,
        pids,
    )


async def get_attempts(
    conn: Conn, *, org_id: UUID, keys: Sequence[tuple[UUID, int]]
) -> dict[tuple[UUID, int], AttemptRecord]:
    """The attempt rows of several ``(job_id, attempt)`` in one statement (missing ones absent)."""
    if not keys:
        return {}
    job_ids, attempts = (list(col) for col in zip(*keys, strict=True))
    rows = await conn.fetch(
        """select a.* from job_attempts a join unnest($2::uuid[], $3::int[]) as u(j, n)
               on a.job_id = u.j and a.attempt = u.n
            where a.organization_id = $1""",
        org_id,
        job_ids,
        attempts,
    )
    return {(r["job_id"], r["attempt"]): _attempt(r) for r in rows}


async def record_outcome(
    conn: Conn,
    *,
    org_id: UUID,
    job_id: UUID,
    attempt: int,
    host_id: UUID | None,
    outcome: ExitReport,
    reported_by: str,
) -> None:
    """The first outcome of an attempt stays: a later one (a resend, a late agent) is not recorded."""
    await record_outcomes(
        conn, org_id=org_id, host_id=host_id, outcomes=[(job_id, attempt, outcome)], reported_by=reported_by
    )


async def record_outcomes(
    conn: Conn,
    *,
    org_id: UUID,
    host_id: UUID | None,
    outcomes: Sequence[tuple[UUID, int, ExitReport]],
    reported_by: str,
) -> None:
    """``record_outcome`` for several ``(job_id, attempt, outcome)`` of one host in one statement."""
    if not outcomes:
        return
    await conn.execute(
        """insert into job_attempts (organization_id, job_id, attempt, host_id, finished_at, outcome, exit_code,
                                     exit_signal, reason, reported_by)
           select $1, j, a, $2, now(), o, c, g, r, $8
             from unnest($3::uuid[], $4::int[], $5::text[], $6::int[], $7::int[], $9::text[]) as u(j, a, o, c, g, r)
           on conflict (job_id, attempt) do update
              set finished_at = now(), outcome = excluded.outcome, exit_code = excluded.exit_code,
                  exit_signal = excluded.exit_signal, reason = excluded.reason, reported_by = excluded.reported_by
            where job_attempts.outcome is null""",
        org_id,
        host_id,
        [j for j, _, _ in outcomes],
        [a for _, a, _ in outcomes],
        [o.status for _, _, o in outcomes],
        [o.exit_code for _, _, o in outcomes],
        [o.signal for _, _, o in outcomes],
        reported_by,
        [o.reason for _, _, o in outcomes],
    )


# ------------------------------------------------------------------------------ the reaper (system path)


async def try_reaper_lock(conn: Conn) -> bool:
    """One reaper pass at a time across replicas; held until the transaction ends."""
    return bool(await conn.fetchval("select pg_try_advisory_xact_lock($1)", REAPER_LOCK))


@dataclass(frozen=True, slots=True)
class LostJob:
    org_id: UUID
    job_id: UUID
    host_name: str
    unreachable_s: float


async def lost_host_jobs(
    conn: Conn, *, grace_s: float, limit: int, resumed_at: datetime | None = None
) -> list[LostJob]:
    """System path: allocated/running jobs of hosts unreachable for longer than ``grace_s``, locked.

    The grace counts from no earlier than ``resumed_at`` (the end of a control-plane outage):
    a host gets the whole grace to come back after the replicas do. Locked in (host, job)
    order, the order in which their host rows are then written; rows another writer holds are
    skipped (the next pass sees them).
    """
    rows = await conn.fetch(
        """select j.organization_id, j.id, h.name,
                  extract(epoch from now() - h.unreachable_since)::float8 as unreachable_s
             from jobs j join hosts h on h.id = j.host_id
            where j.status in ('allocated', 'running') and h.status = 'unreachable'
              and h.unreachable_since < now() - make_interval(secs => $1)
              and ($3::timestamptz is null or $3 < now() - make_interval(secs => $1))
            order by j.host_id, j.id
            limit $2
              for no key update of j skip locked""",
        grace_s,
        limit,
        resumed_at,
    )
    return [LostJob(r[0], r[1], r[2], r[3]) for r in rows]


async def host_loss_requeues(conn: Conn, *, org_ids: Sequence[UUID]) -> dict[UUID, int]:
    """System path: host-loss requeues of the last minute, per organization (the rate limit's count)."""
    rows = await conn.fetch(
        """select organization_id, count(*) from events
            where type = 'job.requeued' and organization_id = any($1::uuid[])
              and created_at > now() - interval '1 minute' and data->>'cause' = 'host_lost'
            group by organization_id""",
        list(org_ids),
    )
    return {r[0]: int(r[1]) for r in rows}


async def silent_cancels(conn: Conn, *, after_s: float, limit: int) -> list[tuple[UUID, UUID]]:
    """System path: running jobs whose cancel was requested more than ``after_s`` ago, locked."""
    rows = await conn.fetch(
        """select organization_id, id from jobs
            where status = 'running' and cancel_requested_at < now() - make_interval(secs => $1)
            order by host_id, id limit $2
              for no key update skip locked""",
        after_s,
        limit,
    )
    return [(r[0], r[1]) for r in rows]


async def silent_timeouts(conn: Conn, *, after_s: float, limit: int) -> list[tuple[UUID, UUID]]:
    """System path: running jobs past max_runtime_s by more than ``after_s`` more seconds, locked."""
    rows = await conn.fetch(
        """select organization_id, id from jobs
            where status = 'running' and max_runtime_s is not null and cancel_requested_at is null
              and started_at + make_interval(secs => max_runtime_s + $1::float8) < now()
            order by host_id, id limit $2
              for no key update skip locked""",
        after_s,
        limit,
    )
    return [(r[0], r[1]) for r in rows]
