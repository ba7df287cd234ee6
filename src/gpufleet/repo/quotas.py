"""Quotas: concurrent whole-GPU equivalents per organization, overall or per GPU model."""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.quotas import Quota
from gpufleet.repo.rows import Table
from gpufleet.repo.scheduling import quota_of

_quotas = Table("quotas", quota_of)


async def upsert(conn: Conn, *, org_id: UUID, gpu_model: str | None, max_gpus: int) -> Quota:
    """Set the quota for ``gpu_model`` (None: all models together), replacing any previous one."""
    row = await conn.fetchrow(
        """insert into quotas (organization_id, gpu_model, max_gpus) values ($1, $2, $3)
           on conflict (organization_id, coalesce(gpu_model, '')) do update set max_gpus = excluded.max_gpus
        returning *""",
        org_id,
        gpu_model,
        max_gpus,
    )
    assert row is not None
    return quota_of(row)


async def list_for_org(conn: Conn, *, org_id: UUID) -> list[Quota]:
    rows = await conn.fetch("select * from quotas where organization_id = $1 order by gpu_model nulls first", org_id)
    return [quota_of(r) for r in rows]


async def delete(conn: Conn, *, org_id: UUID, quota_id: UUID) -> Quota | None:
    return await _quotas.delete(conn, org_id, quota_id)


async def allocated_milli_by_model(conn: Conn, *, org_id: UUID) -> dict[str, int]:
    """Milli-GPU held by active allocations, per GPU model (the capacity ledger's sum)."""
    rows = await conn.fetch(
        """select model, sum(allocated_milli)::bigint as milli from gpu_resources
            where organization_id = $1 and allocated_milli > 0 group by model""",
        org_id,
    )
    return {r["model"]: int(r["milli"]) for r in rows}
