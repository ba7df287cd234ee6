"""The GPU inventory (``gpu_resources``): what agents report, admin status changes, the lists, and
the sketch's ``get_available_gpus``. The allocation ledger that uses the GPUs is ``repo.allocations``.

Every write here is one round trip whatever the number of GPUs (``unnest`` of parallel arrays;
COPY is not allowed on row-level-security tables for the runtime role). GPUs are always addressed
within (organization, host), so an agent can touch nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import GpuDetail, GpuStatus, ReportedGpu
from gpufleet.domain.jobs import gpu_type_tokens
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper

# Raised by the ledger triggers (0002_tenancy.sql) when a GPU or host cannot take the work.
LEDGER_REFUSED = "GF409"
# ...and what a capacity CHECK raises when a racing writer got there first.
CAPACITY_ERRORS = frozenset({LEDGER_REFUSED, "23514"})

gpu_row = mapper(GpuDetail, status=GpuStatus)  # also reads the GPU rows of repo/heartbeats.py's statement
_gpus = Table("gpu_resources", gpu_row)


async def for_host(conn: Conn, *, org_id: UUID, host_id: UUID, for_update: bool = False) -> list[GpuDetail]:
    lock = " for update" if for_update else ""
    rows = await conn.fetch(
        f"select * from gpu_resources where organization_id = $1 and host_id = $2 order by index, uuid{lock}",
        org_id,
        host_id,
    )
    return [gpu_row(r) for r in rows]


async def get(conn: Conn, *, org_id: UUID, gpu_id: UUID, for_update: bool = False) -> GpuDetail | None:
    return await _gpus.get(conn, org_id, gpu_id, lock="update" if for_update else None)


async def get_available_gpus(
    conn: Conn, *, org_id: UUID, min_memory_mb: int | None = None, gpu_type: str | None = None
) -> list[GpuDetail]:
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
    return [gpu_row(r) for r in rows]


def _reported(gpus: Sequence[GpuDetail | ReportedGpu]) -> list[list[Any]]:
    """What an agent reports of each GPU, as unnest's parallel arrays: (idx, model, mem, pci, mig, drv)."""
    return [
        [g.index for g in gpus],
        [g.model for g in gpus],
        [g.memory_mb for g in gpus],
        [g.pci_bus_id for g in gpus],
        [g.mig_mode for g in gpus],
        [g.driver_version for g in gpus],
    ]


def _state(gpus: Sequence[GpuDetail | ReportedGpu]) -> list[list[Any]]:
    """The state decided for each GPU, as parallel arrays: (status, reason, fu, xid); a GPU only
    reported so far starts available."""
    states = [
        (g.status.value, g.status_reason, g.foreign_usage, g.xid_errors_last)
        if isinstance(g, GpuDetail)
        else (GpuStatus.AVAILABLE.value, None, None, None)
        for g in gpus
    ]
    return [[s[i] for s in states] for i in range(4)]


async def insert(
    conn: Conn, *, org_id: UUID, host_id: UUID, gpus: Sequence[GpuDetail | ReportedGpu]
) -> list[GpuDetail]:
    """Insert new GPUs, priced from ``gpu_prices`` for their model (exact name); one statement.

    A ``GpuDetail`` carries the state already decided for it (status, reason, truth check);
    a ``ReportedGpu`` starts available. A GPU another writer inserted meanwhile is skipped.
    """
    if not gpus:
        return []
    rows = await conn.fetch(
        """insert into gpu_resources (organization_id, host_id, uuid, index, model, memory_mb, pci_bus_id, mig_mode,
                                      driver_version, simulated, status, status_reason, foreign_usage,
                                      xid_errors_last, hourly_price, last_seen_at)
           select $1, $2, u.uuid, u.idx, u.model, u.mem, u.pci, u.mig, u.drv, u.sim, u.status, u.reason, u.fu,
                  u.xid, p.hourly_price, now()
             from unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::bool[], $9::text[],
                         $10::bool[], $11::text[], $12::text[], $13::text[], $14::bigint[])
                  as u(uuid, idx, model, mem, pci, mig, drv, sim, status, reason, fu, xid)
             left join gpu_prices p on p.organization_id = $1 and p.gpu_model = u.model
           on conflict (host_id, uuid) do nothing
        returning *""",
        org_id,
        host_id,
        [g.uuid for g in gpus],
        *_reported(gpus),
        [g.simulated for g in gpus],
        *_state(gpus),
    )
    return sorted((gpu_row(r) for r in rows), key=lambda g: (g.index, g.uuid))


async def apply(conn: Conn, *, org_id: UUID, host_id: UUID, gpus: Sequence[GpuDetail]) -> int:
    """Write the new state of changed GPUs in one statement, each guarded by its version.

    Callers hold the rows locked (``for_host(..., for_update=True)``), so the guard is a
    safety net; the count of rows written comes back.
    """
    if not gpus:
        return 0
    status = await conn.execute(
        """update gpu_resources g
              set index = u.idx, model = u.model, memory_mb = greatest(u.mem, g.allocated_memory_mb),
                  pci_bus_id = u.pci, mig_mode = u.mig, driver_version = u.drv, status = u.status,
                  status_reason = u.reason, foreign_usage = u.fu, xid_errors_last = u.xid, last_seen_at = u.seen
             from unnest($3::uuid[], $4::int[], $5::int[], $6::text[], $7::int[], $8::text[], $9::bool[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::bigint[], $15::timestamptz[])
                  as u(id, version, idx, model, mem, pci, mig, drv, status, reason, fu, xid, seen)
            where g.id = u.id and g.organization_id = $1 and g.host_id = $2 and g.version = u.version""",
        org_id,
        host_id,
        [g.id for g in gpus],
        [g.version for g in gpus],
        *_reported(gpus),
        *_state(gpus),
        [g.last_seen_at for g in gpus],
    )
    return int(status.split()[-1])


async def take_offline(conn: Conn, *, org_id: UUID, host_id: UUID, reason: str) -> list[GpuDetail]:
    """Every GPU of the host that is not offline yet goes offline (the host is removed)."""
    rows = await conn.fetch(
        """update gpu_resources set status = 'offline', status_reason = $3
            where organization_id = $1 and host_id = $2 and status <> 'offline'
        returning *""",
        org_id,
        host_id,
        reason,
    )
    return [gpu_row(r) for r in rows]


async def transition(
    conn: Conn,
    *,
    org_id: UUID,
    gpu_id: UUID,
    allowed_from: Sequence[GpuStatus],
    to: GpuStatus,
    reason: str | None,
) -> GpuDetail | None:
    """Move a GPU to ``to`` only from ``allowed_from``; ``None`` when it was not."""
    row = await conn.fetchrow(
        """update gpu_resources set status = $4, status_reason = $5
            where organization_id = $1 and id = $2 and status = any($3::text[])
        returning *""",
        org_id,
        gpu_id,
        [s.value for s in allowed_from],
        to.value,
        reason,
    )
    return gpu_row(row) if row else None


def model_like(text: str) -> str:
    """The LIKE pattern (escaped by backslash) of a model name containing ``text``."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def page(
    conn: Conn,
    *,
    org_id: UUID,
    limit: int,
    after: tuple[UUID] | None = None,
    status: GpuStatus | None = None,
    host_id: UUID | None = None,
    model: str | None = None,
) -> list[GpuDetail]:
    """The GPUs of live hosts by (host name, host, index, id): ``limit + 1`` at most past the GPU
    ``after`` (``keyset.page``); ``model`` matches a part of the name, case-insensitively."""
    sql = r"""select g.* from gpu_resources g
               join hosts h on h.id = g.host_id and h.organization_id = g.organization_id
              where g.organization_id = $1 and h.removed_at is null
                and ($2::text is null or g.status = $2) and ($3::uuid is null or g.host_id = $3)
                and ($4::text is null or g.model ilike $4 escape '\')"""
    rows = await keyset.page(
        conn,
        sql,
        org_id,
        status.value if status else None,
        host_id,
        model_like(model) if model else None,
        after=after,
        limit=limit,
        key=("h.name", "g.host_id", "g.index", "g.id"),
        types=("uuid",),
        ascending=True,
        bound=_GPU_KEY,
    )
    return [gpu_row(r) for r in rows]


# The sort key of the GPU whose id is the cursor (a GPU row holds no host name to put in it).
_GPU_KEY = """(select h2.name, g2.host_id, g2.index, g2.id
                 from gpu_resources g2 join hosts h2 on h2.id = g2.host_id and h2.organization_id = $1
                where g2.organization_id = $1 and g2.id = {})"""
