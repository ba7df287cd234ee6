"""Model use cases: create a model with its default hardware, push content-addressed versions
(their schema derived statically from the archive), read and delete them.

A model's owner is its organization's slug; a name under another organization's slug is a 404
like any model that is not there, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.models import DIGEST_RE, Hardware, ModelRecord, ModelView, VersionRecord, check_name
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from gpufleet.inference import archive, cog_schema
from gpufleet.repo import events, orgs
from gpufleet.repo import models as repo
from gpufleet.services.lookup import found


async def owner_slug(conn: Connection, org_id: UUID) -> str:
    """The organization's slug: the owner part of its models' and deployments' OWNER/NAME."""
    return found(await orgs.get(conn, org_id=org_id), "organization").slug


async def find_model(
    conn: Connection, org_id: UUID, owner: str, name: str, *, for_update: bool = False
) -> tuple[str, ModelRecord]:
    """(the organization's slug, the model ``owner/name``) in the caller's transaction; NotFound
    when ``owner`` is not this organization's slug or it has no such model (predictions use it)."""
    slug = await owner_slug(conn, org_id)
    return slug, await named_model(conn, org_id, slug, owner, name, for_update=for_update)


async def named_model(
    conn: Connection, org_id: UUID, slug: str, owner: str, name: str, *, for_update: bool = False
) -> ModelRecord:
    """The model ``owner/name`` of the organization whose slug is ``slug``; NotFound when ``owner``
    is another organization or it has no such model."""
    m = await repo.get_model(conn, org_id=org_id, name=name, for_update=for_update) if owner == slug else None
    return found(m, f"model {owner}/{name}")


async def _event(conn: Connection, ctx: TenantContext, m: ModelRecord, type: str, data: dict[str, Any]) -> None:
    await events.record(conn, ctx, "model", m.id, type, {"name": m.name, **data})


def _hardware_data(h: Hardware) -> dict[str, Any]:
    return {"gpu_count": h.gpu_count, "gpu_milli": h.gpu_milli, "min_memory_mb": h.min_memory_mb, "label": h.label()}


async def create(
    db: Database, ctx: TenantContext, *, owner: str | None, name: str, description: str, hardware: Hardware
) -> ModelView:
    org_id = ctx.org_id
    check_name(name)
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        slug = await owner_slug(conn, org_id)
        if owner is not None and owner != slug:
            raise NotFound(f"organization {owner!r} not found; this credential's organization is {slug!r}")
        m = await repo.create_model(
            conn, org_id=org_id, name=name, description=description, hardware=hardware, created_by=ctx.user_id
        )
        if m is None:
            raise Conflict(f"model {slug}/{name} already exists", field="name")
        await _event(conn, ctx, m, "model.created", {"hardware": _hardware_data(hardware)})
    return ModelView(slug, m, None)


async def get(db: Database, ctx: TenantContext, owner: str, name: str) -> ModelView:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        slug, m = await find_model(conn, org_id, owner, name)
        latest = (
            await repo.get_version(conn, org_id=org_id, version_id=m.latest_version_id) if m.latest_version_id else None
        )
    return ModelView(slug, m, latest)


async def page(db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None) -> list[ModelView]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        slug = await owner_slug(conn, org_id)
        rows = await repo.page_models(conn, org_id=org_id, limit=limit, after=after)
        latest = await repo.versions_of(
            conn, org_id=org_id, version_ids=[m.latest_version_id for m in rows if m.latest_version_id]
        )
    return [ModelView(slug, m, latest.get(m.latest_version_id) if m.latest_version_id else None) for m in rows]


async def update(
    db: Database,
    ctx: TenantContext,
    owner: str,
    name: str,
    *,
    description: str | None = None,
    hardware: Hardware | None = None,
) -> ModelView:
    """Change the description or the default hardware (used by deployments created from now on)."""
    org_id = ctx.org_id
    fields: dict[str, Any] = {}
    if description is not None:
        fields["description"] = description
    if hardware is not None:
        fields |= {
            "gpu_count": hardware.gpu_count,
            "gpu_milli": hardware.gpu_milli,
            "min_memory_mb": hardware.min_memory_mb,
            "gpu_models": list(hardware.gpu_models),
            "cpu_milli": hardware.cpu_milli,
            "ram_mb": hardware.ram_mb,
        }
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        slug, m = await find_model(conn, org_id, owner, name, for_update=True)
        updated = await repo.update_model(conn, org_id=org_id, model_id=m.id, fields=fields)
        assert updated is not None
        if fields:
            await _event(conn, ctx, updated, "model.updated", {"fields": sorted(fields)})
        latest = (
            await repo.get_version(conn, org_id=org_id, version_id=updated.latest_version_id)
            if updated.latest_version_id
            else None
        )
    return ModelView(slug, updated, latest)


async def delete(db: Database, ctx: TenantContext, owner: str, name: str) -> None:
    org_id = ctx.org_id
    try:
        async with db.transaction(org_id, user_id=ctx.user_id) as conn:
            _, m = await find_model(conn, org_id, owner, name, for_update=True)
            await _event(conn, ctx, m, "model.deleted", {})
            await repo.delete_model(conn, org_id=org_id, model_id=m.id)
    except asyncpg.ForeignKeyViolationError:
        raise Conflict(
            f"model {owner}/{name} still has deployments or replicas; delete its deployments first"
        ) from None


def _inspect(owner: str, name: str, data: bytes) -> tuple[str, cog_schema.VersionInfo]:
    """CPU work off the event loop: unzip the small files and derive the schema."""
    info = cog_schema.derive(archive.read_files(data, suffixes=(".py", ".yaml", ".yml", ".txt")))
    return archive.version_digest(owner, name, data), info


async def push(db: Database, ctx: TenantContext, owner: str, name: str, data: bytes) -> tuple[VersionRecord, bool]:
    """(the version, whether it is new). Pushing makes it the model's latest version, also when
    the same content was pushed before (pushing an older directory again rolls back to it)."""
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        _, m = await find_model(conn, org_id, owner, name)
    if not data:
        raise InvalidInput("the request body must be the model directory as a tar.gz (gpufleet models push)")
    if len(data) > archive.MAX_ARCHIVE_BYTES:
        raise PayloadTooLarge(f"the archive is over {archive.MAX_ARCHIVE_BYTES // 2**20} MiB")
    digest, info = await asyncio.to_thread(_inspect, owner, name, data)
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        _, m = await find_model(conn, org_id, owner, name, for_update=True)
        version, created = await repo.insert_version(
            conn, org_id=org_id, model_id=m.id, digest=digest, archive=data, info=info, created_by=ctx.user_id
        )
        if m.latest_version_id != version.id:
            await repo.set_latest(conn, org_id=org_id, model_id=m.id, version_id=version.id)
        if created:
            await _event(
                conn,
                ctx,
                m,
                "model.version_created",
                {"version": digest, "archive_size": len(data), "is_generator": info.is_generator},
            )
    return version, created


async def version_page(
    db: Database, ctx: TenantContext, owner: str, name: str, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[VersionRecord]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        _, m = await find_model(conn, org_id, owner, name)
        return await repo.page_versions(conn, org_id=org_id, model_id=m.id, limit=limit, after=after)


async def _version(conn: Connection, org_id: UUID, m: ModelRecord, owner: str, digest: str) -> VersionRecord:
    v = await repo.find_version(conn, org_id=org_id, digest=digest, model_id=m.id) if DIGEST_RE.match(digest) else None
    return found(v, f"version {digest} of model {owner}/{m.name}")


async def version(db: Database, ctx: TenantContext, owner: str, name: str, digest: str) -> VersionRecord:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        _, m = await find_model(conn, org_id, owner, name)
        return await _version(conn, org_id, m, owner, digest)


async def delete_version(db: Database, ctx: TenantContext, owner: str, name: str, digest: str) -> None:
    """Delete one version; the model's latest becomes the newest one left."""
    org_id = ctx.org_id
    try:
        async with db.transaction(org_id, user_id=ctx.user_id) as conn:
            _, m = await find_model(conn, org_id, owner, name, for_update=True)
            v = await _version(conn, org_id, m, owner, digest)
            await repo.delete_version(conn, org_id=org_id, version_id=v.id)
            if m.latest_version_id == v.id:
                newest = await repo.latest_version(conn, org_id=org_id, model_id=m.id)
                await repo.set_latest(conn, org_id=org_id, model_id=m.id, version_id=newest.id if newest else None)
            await _event(conn, ctx, m, "model.version_deleted", {"version": digest})
    except asyncpg.ForeignKeyViolationError:
        raise Conflict(
            f"version {digest} of {owner}/{name} is used by a deployment or a replica; "
            "move the deployment to another version first"
        ) from None
