"""Paged reads of hosts, GPUs and join tokens for the API (the writes are in hosts.py / join_tokens.py)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import GpuDetail, GpuStatus, HostDetail, HostStatus, JoinToken
from gpufleet.domain.tenancy import TenantContext
from gpufleet.repo import gpus as gpus_repo
from gpufleet.repo import hosts as hosts_repo
from gpufleet.repo import join_tokens
from gpufleet.services.lookup import found


async def page_hosts(
    db: Database,
    ctx: TenantContext,
    *,
    limit: int,
    after: tuple[str, UUID] | None = None,
    status: HostStatus | None = None,
    include_removed: bool = False,
) -> list[HostDetail]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        return await hosts_repo.page(
            conn, org_id=org_id, limit=limit, after=after, status=status, include_removed=include_removed
        )


async def host_with_gpus(db: Database, ctx: TenantContext, *, host_id: UUID) -> tuple[HostDetail, list[GpuDetail]]:
    """A host (removed ones included: their history stays readable) and its GPUs, in one snapshot."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        host = found(await hosts_repo.get(conn, org_id=org_id, host_id=host_id), f"host {host_id}")
        return host, await gpus_repo.for_host(conn, org_id=org_id, host_id=host_id)


async def page_gpus(
    db: Database,
    ctx: TenantContext,
    *,
    limit: int,
    after: tuple[UUID] | None = None,
    status: GpuStatus | None = None,
    host_id: UUID | None = None,
    model: str | None = None,
) -> list[GpuDetail]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        return await gpus_repo.page(
            conn, org_id=org_id, limit=limit, after=after, status=status, host_id=host_id, model=model
        )


async def page_join_tokens(
    db: Database,
    ctx: TenantContext,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    include_inactive: bool = False,
) -> list[JoinToken]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        return await join_tokens.page(conn, org_id=org_id, limit=limit, after=after, include_inactive=include_inactive)
