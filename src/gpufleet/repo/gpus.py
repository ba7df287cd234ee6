"""GPU inventory and the allocation ledger: get_available_gpus and allocate_gpu of the sketch."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import GpuRecord, GpuStatus, HostRecord, HostStatus
from gpufleet.domain.jobs import Allocation, gpu_type_tokens

# Raised by the ledger triggers (0002_tenancy.sql) when a GPU or host cannot take the work.
LEDGER_REFUSED = "GF409"
# ...and what a capacity CHECK raises when a racing writer got there first.
CAPACITY_ERRORS = frozenset({LEDGER_REFUSED, "23514"})


def _gpu(row: asyncpg.Record) -> GpuRecord:
    return GpuRecord(
        id=row["id"],
        organization_id=row["organization_id"],
        host_id=row["host_id"],
        uuid=row["uuid"],
        index=row["index"],
        model=row["model"],
        memory_mb=row["memory_mb"],
        status=GpuStatus(row["status"]),
        simulated=row["simulated"],
        allocated_milli=row["allocated_milli"],
        allocated_memory_mb=row["allocated_memory_mb"],
        version=row["version"],
        hourly_price=row["hourly_price"],
    )


def _host(row: asyncpg.Record) -> HostRecord:
    return HostRecord(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        status=HostStatus(row["status"]),
        cpu_cores=row["cpu_cores"],
        ram_mb=row["ram_mb"],
        simulated=row["simulated"],
        last_heartbeat_at=row["last_heartbeat_at"],
        created_at=row["created_at"],
    )


def _allocation(row: asyncpg.Record) -> Allocation:
    return Allocation(
        id=row["id"],
        organization_id=row["organization_id"],
        job_id=row["job_id"],
        gpu_id=row["gpu_id"],
        host_id=row["host_id"],
        attempt=row["attempt"],
        milli=row["milli"],
        memory_mib=row["memory_mb"],
        released_at=row["released_at"],
    )


async def create_host(
    conn: Conn, *, org_id: UUID, name: str, cpu_cores: int = 0, ram_mb: int = 0, simulated: bool = False
) -> HostRecord:
    row = await conn.fetchrow(
        """insert into hosts (organization_id, name, hostname, cpu_cores, ram_mb, simulated, last_heartbeat_at)
           values ($1, $2, $2, $3, $4, $5, now()) returning *""",
        org_id,
        name,
        cpu_cores,
        ram_mb,
        simulated,
    )
    assert row is not None
    return _host(row)


async def add_gpu(
    conn: Conn,
    *,
    org_id: UUID,
    host_id: UUID,
    uuid: str,
    index: int,
    model: str,
    memory_mb: int,
    simulated: bool = False,
) -> GpuRecord:
    row = await conn.fetchrow(
        """insert into gpu_resources (organization_id, host_id, uuid, index, model, memory_mb, simulated,
                                      last_seen_at)
           values ($1, $2, $3, $4, $5, $6, $7, now()) returning *""",
        org_id,
        host_id,
        uuid,
        index,
        model,
        memory_mb,
        simulated,
    )
    assert row is not None
    return _gpu(row)


async def get(conn: Conn, *, org_id: UUID, gpu_id: UUID) -> GpuRecord | None:
    row = await conn.fetchrow("select * from gpu_resources where organization_id = $1 and id = $2", org_id, gpu_id)
    return _gpu(row) if row else None


async def get_available_gpus(
    conn: Conn, *, org_id: UUID, min_memory_mb: int | None = None, gpu_type: str | None = None
) -> list[GpuRecord]:
    """Whole GPUs free right now on ready hosts, optionally with enough memory and of one type.

    ``gpu_type`` matches by model tokens (see ``domain.gpu_type_tokens``), so the sketch's
    "NVIDIA A100" finds "A100-80GB" and "NVIDIA A100-SXM4-80GB" alike, but not "A10".
    """
    tokens = gpu_type_tokens(gpu_type) if gpu_type else None
    rows = await conn.fetch(
        """select g.* from gpu_resources g join hosts h on h.id = g.host_id
            where g.organization_id = $1 and g.status = 'available' and g.allocated_milli = 0
              and h.status = 'ready' and h.revoked_at is null
              and ($2::int is null or g.memory_mb >= $2)
              and ($3::text[] is null or regexp_split_to_array(lower(g.model), '[^a-z0-9]+') @> $3::text[])
            order by g.memory_mb, h.name, g.index""",
        org_id,
        min_memory_mb,
        tokens,
    )
    return [_gpu(r) for r in rows]


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


async def active_allocations(conn: Conn, *, org_id: UUID, job_id: UUID) -> list[Allocation]:
    rows = await conn.fetch(
        "select * from allocations where organization_id = $1 and job_id = $2 and released_at is null",
        org_id,
        job_id,
    )
    return [_allocation(r) for r in rows]


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
