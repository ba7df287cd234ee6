"""The scheduler's SQL, on the system path (it spans every organization): snapshot and batch commit.

Every statement is set-based (``unnest`` of arrays), so one round trip carries a whole batch.
The tenant is part of each row written (``organization_id`` from the snapshot) and the ledger
triggers check it again against the GPU's and host's organization.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.costs import BudgetState
from gpufleet.domain.quotas import Quota
from gpufleet.repo import budgets as budgets_repo
from gpufleet.repo.jobs import gpu_requirement
from gpufleet.repo.rows import from_row, mapper
from gpufleet.scheduler.model import AVAILABLE, GpuState, HostState
from gpufleet.scheduler.types import FleetSnapshot, PendingJob

ACTOR = "scheduler"
# Jobs whose unspent estimates a hard budget reserves when another job is placed.
HOLDING = ("allocated", "running")
# A GPU the ledger may still allocate from; the allocator calls both "available".
_ALLOCATABLE = frozenset({"available", "allocated"})

_pending_job = mapper(PendingJob, gpu=from_row(gpu_requirement))


async def snapshot(conn: Conn, *, queue_limit: int) -> FleetSnapshot:
    """Free capacity of every organization's hosts, the pending queue in order, quotas and usage."""
    host_rows = await conn.fetch(
        """select id, organization_id, name, status, cpu_cores, ram_mb, cpu_milli_allocated, ram_mb_allocated
             from hosts where revoked_at is null"""
    )
    gpu_rows = await conn.fetch(
        """select g.id, g.host_id, g.model, g.memory_mb, g.allocated_milli, g.allocated_memory_mb, g.status
             from gpu_resources g join hosts h on h.id = g.host_id
            where h.revoked_at is null
            order by g.host_id, g.index"""
    )
    job_rows = await conn.fetch(
        """select id, organization_id, attempt, priority,
                  extract(epoch from clock_timestamp() - queued_at)::float8 as waited_s,
                  gpu_count, gpu_milli, min_memory_mb, gpu_models, cpu_milli, ram_mb, pending_reason,
                  submitted_by, labels, cost_estimate
             from jobs where status = 'pending'
            order by priority desc, queued_at, id
            limit $1""",
        queue_limit,
    )
    quota_rows = await conn.fetch("select * from quotas")
    usage_rows = await conn.fetch(
        """select organization_id, model, sum(allocated_milli)::bigint as milli from gpu_resources
            where allocated_milli > 0 and organization_id in (select organization_id from quotas)
            group by 1, 2"""
    )

    gpus_of: dict[UUID, list[GpuState]] = {}
    for g in gpu_rows:
        status = g["status"]
        gpus_of.setdefault(g["host_id"], []).append(
            GpuState(
                str(g["id"]),
                g["model"],
                g["memory_mb"],
                1000 - g["allocated_milli"],
                max(0, g["memory_mb"] - g["allocated_memory_mb"]),
                AVAILABLE if status in _ALLOCATABLE else status,
            )
        )
    hosts: dict[UUID, list[HostState]] = {}
    for h in host_rows:
        cpu_total = h["cpu_cores"] * 1000
        ram_total = h["ram_mb"]
        hosts.setdefault(h["organization_id"], []).append(
            HostState(
                str(h["id"]),
                h["name"],
                cpu_total,
                min(cpu_total, max(0, cpu_total - h["cpu_milli_allocated"])),
                ram_total,
                min(ram_total, max(0, ram_total - h["ram_mb_allocated"])),
                tuple(gpus_of.get(h["id"], ())),
                h["status"],
            )
        )
    pending = [_pending_job(r) for r in job_rows]
    quotas: dict[UUID, list[Quota]] = {}
    for q in quota_rows:
        quotas.setdefault(q["organization_id"], []).append(quota_of(q))
    usage: dict[UUID, dict[str, int]] = {}
    for u in usage_rows:
        usage.setdefault(u["organization_id"], {})[u["model"]] = int(u["milli"])
    budgets: dict[UUID, list[BudgetState]] = {}
    waiting = sorted({j.organization_id for j in pending})  # only they can spend a budget now
    for b in await budgets_repo.states(conn, org_ids=waiting, hard_only=True, outstanding_statuses=HOLDING):
        budgets.setdefault(b.budget.organization_id, []).append(b)
    return FleetSnapshot(hosts=hosts, pending=pending, quotas=quotas, gpu_usage=usage, budgets=budgets)


quota_of = mapper(Quota)


# ------------------------------------------------------------------------------ batch commit


@dataclass(frozen=True, slots=True)
class LockedHost:
    ready: bool
    cpu_free: int
    ram_free: int


@dataclass(frozen=True, slots=True)
class LockedGpu:
    host_id: UUID
    allocatable: bool
    free_milli: int
    free_memory_mib: int


@dataclass(frozen=True, slots=True)
class Locked:
    """Rows a batch touches, locked FOR UPDATE in the ledger's order (job, host, GPU), as they are now."""

    jobs: dict[UUID, int]  # still-pending job -> its attempt
    hosts: dict[UUID, LockedHost]
    gpus: dict[UUID, LockedGpu]


async def lock_batch(conn: Conn, *, job_ids: list[UUID], host_ids: list[UUID], gpu_ids: list[UUID]) -> Locked:
    """Lock the batch's rows in id order, job -> host -> GPU (the order every ledger writer uses)."""
    jobs = await conn.fetch(
        "select id, attempt from jobs where id = any($1::uuid[]) and status = 'pending' order by id for no key update",
        job_ids,
    )
    hosts = await conn.fetch(
        """select id, status = 'ready' and revoked_at is null as ready,
                  cpu_cores * 1000 - cpu_milli_allocated as cpu_free, ram_mb - ram_mb_allocated as ram_free
             from hosts where id = any($1::uuid[]) order by id for update""",
        host_ids,
    )
    gpus = await conn.fetch(
        """select id, host_id, status, 1000 - allocated_milli as free_milli,
                  memory_mb - allocated_memory_mb as free_memory_mb
             from gpu_resources where id = any($1::uuid[]) order by id for update""",
        gpu_ids,
    )
    return Locked(
        jobs={r["id"]: r["attempt"] for r in jobs},
        hosts={r["id"]: LockedHost(r["ready"], r["cpu_free"], r["ram_free"]) for r in hosts},
        gpus={
            r["id"]: LockedGpu(r["host_id"], r["status"] in _ALLOCATABLE, r["free_milli"], r["free_memory_mb"])
            for r in gpus
        },
    )


@dataclass(frozen=True, slots=True)
class PlacementRow:
    """One placement to write: the job moves to ``allocated`` on ``host_id`` with these GPU shares."""

    org_id: UUID
    job_id: UUID
    attempt: int
    host_id: UUID
    shares: tuple[tuple[UUID, int, int], ...]  # (gpu id, milli, memory MiB)
    cpu_milli: int
    ram_mb: int
    user_id: UUID | None = None  # for hard budgets
    labels: Mapping[str, str] = field(default_factory=dict)
    cost_estimate: Decimal | None = None


async def write_placements(conn: Conn, rows: Sequence[PlacementRow]) -> int:
    """Jobs pending -> allocated, their allocation rows and ``job.allocated`` events, in three statements.

    The rows are locked and verified by the caller; the ledger triggers and CHECK constraints
    remain the final guard (a refusal aborts the caller's transaction).
    """
    if not rows:
        return 0
    status = await conn.execute(
        """update jobs j set status = 'allocated', host_id = p.host_id, allocated_at = now(), pending_reason = null
             from unnest($1::uuid[], $2::uuid[], $3::int[]) as p(id, host_id, attempt)
            where j.id = p.id and j.status = 'pending' and j.attempt = p.attempt""",
        [r.job_id for r in rows],
        [r.host_id for r in rows],
        [r.attempt for r in rows],
    )
    moved = int(status.rsplit(" ", 1)[-1])
    if moved != len(rows):
        # The caller locked these rows as pending; anything else is a bug, never a partial write.
        raise RuntimeError(f"placement batch moved {moved} of {len(rows)} jobs")
    a_org: list[UUID] = []
    a_job: list[UUID] = []
    a_gpu: list[UUID] = []
    a_host: list[UUID] = []
    a_attempt: list[int] = []
    a_milli: list[int] = []
    a_mem: list[int] = []
    for r in rows:
        for gpu_id, milli, memory_mib in r.shares:
            a_org.append(r.org_id)
            a_job.append(r.job_id)
            a_gpu.append(gpu_id)
            a_host.append(r.host_id)
            a_attempt.append(r.attempt)
            a_milli.append(milli)
            a_mem.append(memory_mib)
    if a_job:
        await conn.execute(
            """insert into allocations (organization_id, job_id, gpu_id, host_id, attempt, milli, memory_mb)
               select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int[], $6::int[], $7::int[])""",
            a_org,
            a_job,
            a_gpu,
            a_host,
            a_attempt,
            a_milli,
            a_mem,
        )
    data = [
        json.dumps(
            {
                "from": "pending",
                "to": "allocated",
                "reason": None,
                "attempt": r.attempt,
                "host_id": str(r.host_id),
                "gpus": [{"gpu_id": str(g), "milli": m, "memory_mb": mem} for g, m, mem in r.shares],
            }
        )
        for r in rows
    ]
    await append_events(conn, [r.org_id for r in rows], "job", [r.job_id for r in rows], "job.allocated", data)
    return moved


async def append_events(
    conn: Conn, org_ids: list[UUID], entity_type: str, entity_ids: list[UUID], type: str, data: list[str]
) -> None:
    """Many events of one type in one statement; ``data`` holds JSON documents as text."""
    await conn.execute(
        """insert into events (organization_id, entity_type, entity_id, type, data, actor)
           select o, $3, e, $4, d::jsonb, $5 from unnest($1::uuid[], $2::uuid[], $6::text[]) as t(o, e, d)""",
        org_ids,
        entity_ids,
        entity_type,
        type,
        ACTOR,
        data,
    )


async def record_conflicts(conn: Conn, rows: Sequence[tuple[PlacementRow, str]]) -> None:
    """``allocation.conflict`` events (for admins) for placements the database state no longer allowed."""
    if not rows:
        return
    data = [
        json.dumps(
            {
                "job_id": str(p.job_id),
                "host_id": str(p.host_id),
                "gpu_ids": [str(g) for g, _, _ in p.shares],
                "error": why,
                "source": ACTOR,
                "outcome": "retried",
            }
        )
        for p, why in rows
    ]
    await append_events(
        conn, [p.org_id for p, _ in rows], "allocation", [p.job_id for p, _ in rows], "allocation.conflict", data
    )


async def fail_jobs(conn: Conn, *, jobs: Sequence[tuple[UUID, str]]) -> int:
    """Pending jobs that no host of their organization could ever hold -> ``allocation_failed``."""
    if not jobs:
        return 0
    rows = await conn.fetch(
        """update jobs j set status = 'allocation_failed', status_reason = p.reason, pending_reason = null,
                             finished_at = now()
             from unnest($1::uuid[], $2::text[]) as p(id, reason)
            where j.id = p.id and j.status = 'pending'
        returning j.id, j.organization_id, j.attempt, j.status_reason""",
        [j for j, _ in jobs],
        [r for _, r in jobs],
    )
    data = [
        json.dumps(
            {"from": "pending", "to": "allocation_failed", "reason": r["status_reason"], "attempt": r["attempt"]}
        )
        for r in rows
    ]
    await append_events(
        conn, [r["organization_id"] for r in rows], "job", [r["id"] for r in rows], "job.allocation_failed", data
    )
    return len(rows)


async def set_pending_reasons(conn: Conn, *, reasons: Sequence[tuple[UUID, str | None]]) -> int:
    """Write why jobs wait; only rows whose reason really changes are touched.

    A reason is advice, rewritten every cycle: rows another transaction holds (a placement, a
    cancel, another scheduler during a leader change) are skipped rather than waited for, and
    the rest are locked in id order, so two writers never deadlock over a set of jobs.
    """
    if not reasons:
        return 0
    status = await conn.execute(
        """with p as (select * from unnest($1::uuid[], $2::text[]) as p(id, reason)),
                free as (select j.id from jobs j join p on p.id = j.id
                          where j.status = 'pending' and j.pending_reason is distinct from p.reason
                          order by j.id for no key update of j skip locked)
           update jobs j set pending_reason = p.reason
             from p join free on free.id = p.id
            where j.id = p.id""",
        [j for j, _ in reasons],
        [r for _, r in reasons],
    )
    return int(status.rsplit(" ", 1)[-1])


async def wakeup_counter(conn: Conn) -> int:
    """Bumped by every event that may let a job run (see 0005_scheduling.sql); polled behind a pooler."""
    return int(await conn.fetchval("select last_value from gpufleet_scheduler_wakeups"))


# ------------------------------------------------------------------------------ leadership


async def try_leader_lock(conn: Conn, *, key: int) -> bool:
    """A session-level advisory lock: held until released or until the session ends."""
    return bool(await conn.fetchval("select pg_try_advisory_lock($1)", key))


async def ping(conn: Conn) -> None:
    await conn.fetchval("select 1")


async def renew_lease(conn: Conn, *, name: str, owner: str, lease_s: float) -> bool:
    """Take or extend the lease ``name`` if it is ours or has expired (by the database clock)."""
    holder = await conn.fetchval(
        """insert into scheduler_leases (name, owner, expires_at)
           values ($1, $2, now() + make_interval(secs => $3))
           on conflict (name) do update set owner = excluded.owner, expires_at = excluded.expires_at
            where scheduler_leases.owner = excluded.owner or scheduler_leases.expires_at < now()
        returning owner""",
        name,
        owner,
        lease_s,
    )
    return bool(holder == owner)


async def drop_lease(conn: Conn, *, name: str, owner: str) -> None:
    await conn.execute("delete from scheduler_leases where name = $1 and owner = $2", name, owner)
