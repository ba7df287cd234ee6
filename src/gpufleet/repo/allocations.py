"""The allocation ledger: which job holds how much of which GPU; the sketch's ``allocate_gpu``.

The ledger triggers (0002_tenancy.sql) move the GPU's counters with every row; what
they raise when a GPU cannot take the work is ``repo.gpus.CAPACITY_ERRORS``.
"""

from __future__ import annotations

from operator import itemgetter
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.jobs import Allocation
from gpufleet.repo.rows import from_row, mapper

# The domain names the unit (memory_mib); the column keeps its name.
_allocation = mapper(Allocation, memory_mib=from_row(itemgetter("memory_mb")))


async def allocate_gpu(
    conn: Conn,
    *,
    org_id: UUID,
    gpu_id: UUID,
    job_id: UUID,
    host_id: UUID,
    attempt: int,
    milli: int = 1000,
    memory_mb: int | None = None,
) -> Allocation:
    """Record ``milli`` of GPU ``gpu_id`` for ``job_id``; the ledger trigger moves the GPU's counters.

    Atomic and conflict-safe by construction: the trigger locks the GPU row and its CHECK
    constraints refuse any over-allocation, raising ``asyncpg.CheckViolationError`` or a
    ``GF409`` error that the caller turns into a conflict.
    """
    row = await conn.fetchrow(
        """insert into allocations (organization_id, job_id, gpu_id, host_id, attempt, milli, memory_mb)
           select $1, $2, $3, $4, $5, $6,
                  coalesce($7::int, case when $6 = 1000 then g.memory_mb else g.memory_mb * $6 / 1000 end)
             from gpu_resources g where g.id = $3 and g.organization_id = $1
        returning *""",
        org_id,
        job_id,
        gpu_id,
        host_id,
        attempt,
        milli,
        memory_mb,
    )
    if row is None:
        raise LookupError(f"GPU {gpu_id} not found")
    return _allocation(row)


async def active_allocations_for_jobs(conn: Conn, *, org_id: UUID, job_ids: list[UUID]) -> list[Allocation]:
    """What the given jobs hold now, in one query (ordered by job, then GPU)."""
    if not job_ids:
        return []
    rows = await conn.fetch(
        """select * from allocations
            where organization_id = $1 and job_id = any($2::uuid[]) and released_at is null
            order by job_id, gpu_id""",
        org_id,
        job_ids,
    )
    return [_allocation(r) for r in rows]
