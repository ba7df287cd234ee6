"""Writing a cycle's placements: batches, each one transaction, checked against the locked rows.

A batch locks its rows (job -> host -> GPU, in id order), checks each placement against what the
database holds *now* (a concurrent ``allocate_gpu`` or another scheduler may have taken capacity
since the snapshot), writes the placements that still fit and leaves the others pending: a lost
race is counted, recorded as ``allocation.conflict`` and retried on a fresh snapshot, never
failed. The ledger's CHECK constraints stay the final guard: if the database refuses the batch
anyway (23514, GF409, a deadlock), the whole batch is rolled back and counted as conflicts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.costs import BudgetBook
from gpufleet.repo import budgets as budgets_repo
from gpufleet.repo import gpus as gpus_repo
from gpufleet.repo import scheduling as repo
from gpufleet.repo.scheduling import Locked, PlacementRow
from gpufleet.scheduler.model import Placement
from gpufleet.scheduler.types import CommitOutcome, PendingJob

log = logging.getLogger(__name__)

# Refusals that mean "someone else got there first": retry, never fail.
RETRYABLE = gpus_repo.CAPACITY_ERRORS | {"40P01", "40001"}


def rows_of(placements: Sequence[tuple[PendingJob, Placement]]) -> list[PlacementRow]:
    return [
        PlacementRow(
            org_id=job.organization_id,
            job_id=job.id,
            attempt=job.attempt,
            host_id=UUID(p.host_id),
            shares=tuple((UUID(s.gpu_id), s.milli, s.memory_mib) for s in p.gpus),
            cpu_milli=p.cpu_milli,
            ram_mb=p.ram_mb,
            user_id=job.submitted_by,
            labels=job.labels,
            cost_estimate=job.cost_estimate,
        )
        for job, p in placements
    ]


def check(
    rows: Sequence[PlacementRow], locked: Locked
) -> tuple[list[PlacementRow], list[tuple[PlacementRow, str]], list[UUID]]:
    """Split a batch into (still fits, lost a race and why, job no longer pending)."""
    ok: list[PlacementRow] = []
    lost: list[tuple[PlacementRow, str]] = []
    gone: list[UUID] = []
    cpu = {h: v.cpu_free for h, v in locked.hosts.items()}
    ram = {h: v.ram_free for h, v in locked.hosts.items()}
    milli = {g: v.free_milli for g, v in locked.gpus.items()}
    memory = {g: v.free_memory_mib for g, v in locked.gpus.items()}
    for r in rows:
        attempt = locked.jobs.get(r.job_id)
        if attempt is None or attempt != r.attempt:
            gone.append(r.job_id)
            continue
        why = _why_not(r, locked, cpu, ram, milli, memory)
        if why is not None:
            lost.append((r, why))
            continue
        cpu[r.host_id] -= r.cpu_milli
        ram[r.host_id] -= r.ram_mb
        for gpu_id, m, mem in r.shares:
            milli[gpu_id] -= m
            memory[gpu_id] -= mem
        ok.append(r)
    return ok, lost, gone


def _why_not(
    r: PlacementRow,
    locked: Locked,
    cpu: dict[UUID, int],
    ram: dict[UUID, int],
    milli: dict[UUID, int],
    memory: dict[UUID, int],
) -> str | None:
    host = locked.hosts.get(r.host_id)
    if host is None or not host.ready:
        return f"host {r.host_id} is no longer ready"
    if cpu[r.host_id] < r.cpu_milli or ram[r.host_id] < r.ram_mb:
        return f"host {r.host_id}: CPU or RAM taken since the snapshot"
    for gpu_id, m, mem in r.shares:
        g = locked.gpus.get(gpu_id)
        if g is None or not g.allocatable or g.host_id != r.host_id:
            return f"GPU {gpu_id} is no longer available"
        if milli[gpu_id] < m or memory[gpu_id] < mem:
            return (
                f"GPU {gpu_id}: {milli[gpu_id] / 1000:g} GPU / {memory[gpu_id]} MiB free, "
                f"needs {m / 1000:g} GPU / {mem} MiB"
            )
    return None


async def within_budgets(
    conn: Connection, rows: list[PlacementRow]
) -> tuple[list[PlacementRow], list[tuple[PlacementRow, str]]]:
    """Split placements into (within every hard budget, over one and why), with the budgets locked.

    This is the authoritative budget check: the budget rows stay locked until this transaction
    commits, so two placements (or a placement and a submission) never both spend the same
    remaining amount. Without hard budgets it costs one indexed read.
    """
    if not rows:
        return rows, []
    states = await budgets_repo.states(
        conn, org_ids=sorted({r.org_id for r in rows}), hard_only=True, outstanding_statuses=repo.HOLDING, lock=True
    )
    if not states:
        return rows, []
    book = BudgetBook(states)
    ok: list[PlacementRow] = []
    over: list[tuple[PlacementRow, str]] = []
    for r in rows:
        why = book.admit(r.user_id, r.labels, r.cost_estimate)
        if why is None:
            book.charge(r.user_id, r.labels, r.cost_estimate)
            ok.append(r)
        else:
            over.append((r, why))
    return ok, over


async def commit_batch(db: Database, rows: Sequence[PlacementRow]) -> CommitOutcome:
    """One transaction: lock, check, write what still fits, record the conflicts."""
    job_ids = sorted({r.job_id for r in rows})
    host_ids = sorted({r.host_id for r in rows})
    gpu_ids = sorted({g for r in rows for g, _, _ in r.shares})
    try:
        async with db.system_transaction() as conn:
            locked = await repo.lock_batch(conn, job_ids=job_ids, host_ids=host_ids, gpu_ids=gpu_ids)
            ok, lost, gone = check(rows, locked)
            ok, over = await within_budgets(conn, ok)
            lost += over
            await repo.write_placements(conn, ok)
            await repo.record_conflicts(conn, lost)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate not in RETRYABLE:
            raise
        log.info("placement batch of %d refused by the database (%s); retrying on a fresh snapshot", len(rows), exc)
        async with db.system_transaction() as conn:
            await repo.record_conflicts(conn, [(r, f"{exc.sqlstate}: {exc}") for r in rows])
        return CommitOutcome(conflicts=[r.job_id for r in rows], aborted=True)
    return CommitOutcome(placed=[r.job_id for r in ok], conflicts=[r.job_id for r, _ in lost], gone=gone)
