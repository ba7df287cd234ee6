"""Deployments: a name -> a model version with scaling bounds and hardware; every SQL statement about them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.models import Hardware
from gpufleet.domain.predictions import Deployment
from gpufleet.repo import keyset
from gpufleet.repo.models import hardware_of
from gpufleet.repo.rows import assignments, from_row, mapper

_SELECT = """select d.*, m.name as model_name, v.digest
               from deployments d join models m on m.id = d.model_id join model_versions v on v.id = d.version_id"""
_FIELDS = frozenset(
    {
        "version_id",
        "release",
        "min_replicas",
        "max_replicas",
        "idle_timeout_s",
        "concurrency",
        "gpu_count",
        "gpu_milli",
        "min_memory_mb",
        "gpu_models",
        "cpu_milli",
        "ram_mb",
        "model_id",
    }
)


_deployment = mapper(Deployment, hardware=from_row(hardware_of))


def hardware_columns(hw: Hardware) -> dict[str, Any]:
    return {
        "gpu_count": hw.gpu_count,
        "gpu_milli": hw.gpu_milli,
        "min_memory_mb": hw.min_memory_mb,
        "gpu_models": list(hw.gpu_models),
        "cpu_milli": hw.cpu_milli,
        "ram_mb": hw.ram_mb,
    }


async def create(
    conn: Conn,
    *,
    org_id: UUID,
    name: str,
    model_id: UUID,
    version_id: UUID,
    implicit: bool,
    min_replicas: int,
    max_replicas: int,
    idle_timeout_s: int,
    concurrency: int,
    hardware: Hardware,
    created_by: UUID | None,
) -> Deployment | None:
    """The new deployment, or None when the name (or the model's implicit one) exists already."""
    hw = hardware_columns(hardware)
    row = await conn.fetchrow(
        """insert into deployments (organization_id, name, model_id, version_id, implicit, min_replicas,
                                    max_replicas, idle_timeout_s, concurrency, gpu_count, gpu_milli, min_memory_mb,
                                    gpu_models, cpu_milli, ram_mb, created_by)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           on conflict do nothing returning id""",
        org_id,
        name,
        model_id,
        version_id,
        implicit,
        min_replicas,
        max_replicas,
        idle_timeout_s,
        concurrency,
        *hw.values(),
        created_by,
    )
    return await get(conn, org_id=org_id, deployment_id=row["id"]) if row else None


async def get(conn: Conn, *, org_id: UUID, deployment_id: UUID, lock: bool = False) -> Deployment | None:
    if lock:
        await conn.execute(
            "select 1 from deployments where organization_id = $1 and id = $2 for no key update",
            org_id,
            deployment_id,
        )
    row = await conn.fetchrow(f"{_SELECT} where d.organization_id = $1 and d.id = $2", org_id, deployment_id)
    return _deployment(row) if row else None


async def try_lock(conn: Conn, *, org_id: UUID, deployment_id: UUID) -> bool:
    """Lock the deployment row unless another transaction holds it (the autoscaler: one at a time)."""
    found = await conn.fetchval(
        "select true from deployments where organization_id = $1 and id = $2 for no key update skip locked",
        org_id,
        deployment_id,
    )
    return bool(found)


async def get_by_name(conn: Conn, *, org_id: UUID, name: str) -> Deployment | None:
    row = await conn.fetchrow(f"{_SELECT} where d.organization_id = $1 and d.name = $2", org_id, name)
    return _deployment(row) if row else None


async def implicit_of(conn: Conn, *, org_id: UUID, model_id: UUID) -> Deployment | None:
    row = await conn.fetchrow(
        f"{_SELECT} where d.organization_id = $1 and d.model_id = $2 and d.implicit", org_id, model_id
    )
    return _deployment(row) if row else None


async def page(
    conn: Conn, *, org_id: UUID, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[Deployment]:
    """Newest first: ``limit + 1`` deployments at most past ``before`` (``keyset.page``)."""
    sql = f"{_SELECT} where d.organization_id = $1"
    rows = await keyset.page(conn, sql, org_id, after=before, limit=limit, key=("d.created_at", "d.id"))
    return [_deployment(r) for r in rows]


async def update(conn: Conn, *, org_id: UUID, deployment_id: UUID, fields: dict[str, Any]) -> Deployment | None:
    names = sorted(fields)
    sets = assignments(names, _FIELDS, start=3)
    if sets:
        await conn.execute(
            f"update deployments set {', '.join(sets)} where organization_id = $1 and id = $2",
            org_id,
            deployment_id,
            *(fields[n] for n in names),
        )
    return await get(conn, org_id=org_id, deployment_id=deployment_id)


async def delete(conn: Conn, *, org_id: UUID, deployment_id: UUID) -> bool:
    done = await conn.fetchval(
        "delete from deployments where organization_id = $1 and id = $2 returning true", org_id, deployment_id
    )
    return bool(done)


async def record_failure(conn: Conn, *, org_id: UUID, deployment_id: UUID, max_backoff_s: int) -> int:
    """One more replica crash in a row; the next start waits 1, 2, 4 ... ``max_backoff_s`` seconds. The count."""
    row = await conn.fetchrow(
        """update deployments set failures = failures + 1,
                  next_start_after = now() + make_interval(secs => least($3, power(2, least(failures, 16))))
            where organization_id = $1 and id = $2 returning failures""",
        org_id,
        deployment_id,
        max_backoff_s,
    )
    return int(row["failures"]) if row else 0


async def reset_failures(conn: Conn, *, org_id: UUID, deployment_id: UUID) -> None:
    await conn.execute(
        """update deployments set failures = 0, next_start_after = null
            where organization_id = $1 and id = $2 and (failures <> 0 or next_start_after is not null)""",
        org_id,
        deployment_id,
    )


async def backing_off(conn: Conn, *, org_id: UUID, deployment_id: UUID) -> bool:
    """Whether a replica start must wait (the crash backoff), by the database clock."""
    return bool(
        await conn.fetchval(
            "select next_start_after > now() from deployments where organization_id = $1 and id = $2",
            org_id,
            deployment_id,
        )
    )


async def follow_latest(conn: Conn, *, org_id: UUID, model_id: UUID, version_id: UUID) -> list[Deployment]:
    """The model's implicit deployment moves to its new latest version (a new release); the moved ones."""
    rows = await conn.fetch(
        """update deployments set version_id = $3, release = release + 1
            where organization_id = $1 and model_id = $2 and implicit and version_id <> $3 returning id""",
        org_id,
        model_id,
        version_id,
    )
    return [d for r in rows if (d := await get(conn, org_id=org_id, deployment_id=r["id"])) is not None]


# ------------------------------------------------------------------------------ the autoscaler (system path)


async def needing_attention(conn: Conn, *, limit: int) -> list[tuple[UUID, UUID]]:
    """System path: (org, deployment) of every deployment with live replicas, queued predictions,
    or a minimum to keep: those the autoscaler looks at."""
    rows = await conn.fetch(
        """select d.organization_id, d.id from deployments d
            where d.min_replicas > 0
               or exists (select 1 from replicas r where r.deployment_id = d.id and r.status <> 'stopped')
               or exists (select 1 from predictions p
                           where p.deployment_id = d.id and p.status = 'starting' and p.replica_id is null)
            order by d.id limit $1""",
        limit,
    )
    return [(r[0], r[1]) for r in rows]
