"""Models and their content-addressed versions: every SQL statement about ``models`` and
``model_versions``. Reads leave the archive out; ``get_archive`` fetches it alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.models import Hardware, ModelRecord, VersionInfo, VersionRecord
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, assignments, from_row, mapper

_VERSION_COLUMNS = """v.id, v.organization_id, v.model_id, m.name as model_name, v.digest, v.archive_size,
    v.predict_ref, v.cog_config, v.openapi_schema, v.python_packages, v.python_version, v.gpu,
    v.is_generator, v.cog_version, v.created_by, v.created_at"""
_VERSIONS = f"select {_VERSION_COLUMNS} from model_versions v join models m on m.id = v.model_id"
_MODEL_FIELDS = frozenset(
    {"description", "gpu_count", "gpu_milli", "min_memory_mb", "gpu_models", "cpu_milli", "ram_mb"}
)


hardware_of = mapper(Hardware, gpu_models=tuple)  # the hardware columns models and deployments share


_model = mapper(ModelRecord, hardware=from_row(hardware_of))
_models = Table("models", _model)


_version = mapper(VersionRecord, python_packages=list)


# -- models -------------------------------------------------------------------------------


async def create_model(
    conn: Conn,
    *,
    org_id: UUID,
    name: str,
    description: str,
    hardware: Hardware,
    created_by: UUID | None,
) -> ModelRecord | None:
    """The new model, or None when the organization already has one by that name."""
    row = await conn.fetchrow(
        """insert into models (organization_id, name, description, gpu_count, gpu_milli, min_memory_mb,
                               gpu_models, cpu_milli, ram_mb, created_by)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           on conflict (organization_id, name) do nothing returning *""",
        org_id,
        name,
        description,
        hardware.gpu_count,
        hardware.gpu_milli,
        hardware.min_memory_mb,
        list(hardware.gpu_models),
        hardware.cpu_milli,
        hardware.ram_mb,
        created_by,
    )
    return _model(row) if row else None


async def get_model(conn: Conn, *, org_id: UUID, name: str, for_update: bool = False) -> ModelRecord | None:
    lock = " for no key update" if for_update else ""
    row = await conn.fetchrow(f"select * from models where organization_id = $1 and name = $2{lock}", org_id, name)
    return _model(row) if row else None


async def get_model_by_id(conn: Conn, *, org_id: UUID, model_id: UUID) -> ModelRecord | None:
    return await _models.get(conn, org_id, model_id)


async def page_models(
    conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None
) -> list[ModelRecord]:
    """Newest first: ``limit + 1`` models at most past ``after`` (``keyset.page``)."""
    sql = "select * from models where organization_id = $1"
    return [_model(r) for r in await keyset.page(conn, sql, org_id, after=after, limit=limit)]


async def update_model(conn: Conn, *, org_id: UUID, model_id: UUID, fields: dict[str, Any]) -> ModelRecord | None:
    sets = assignments(fields, _MODEL_FIELDS, start=3)
    if not sets:
        return await get_model_by_id(conn, org_id=org_id, model_id=model_id)
    row = await conn.fetchrow(
        f"update models set {', '.join(sets)} where organization_id = $1 and id = $2 returning *",
        org_id,
        model_id,
        *fields.values(),
    )
    return _model(row) if row else None


async def delete_model(conn: Conn, *, org_id: UUID, model_id: UUID) -> bool:
    """Deletes the model and its versions; raises asyncpg's ForeignKeyViolationError while a
    deployment of another model still runs one of them."""
    done = await conn.fetchval(
        "delete from models where organization_id = $1 and id = $2 returning true", org_id, model_id
    )
    return bool(done)


async def add_run(conn: Conn, *, org_id: UUID, model_id: UUID) -> None:
    """One more prediction of the model (Replicate's ``run_count``)."""
    await conn.execute(
        "update models set run_count = run_count + 1 where organization_id = $1 and id = $2", org_id, model_id
    )


# -- versions -----------------------------------------------------------------------------


async def insert_version(
    conn: Conn,
    *,
    org_id: UUID,
    model_id: UUID,
    digest: str,
    archive: bytes,
    info: VersionInfo,
    created_by: UUID | None,
) -> tuple[VersionRecord, bool]:
    """(the version, whether it is new): the same digest pushed again returns the existing one."""
    new_id = await conn.fetchval(
        """insert into model_versions (organization_id, model_id, digest, archive, archive_size, predict_ref,
                                       cog_config, openapi_schema, python_packages, python_version, gpu,
                                       is_generator, cog_version, created_by)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           on conflict (model_id, digest) do nothing returning id""",
        org_id,
        model_id,
        digest,
        archive,
        len(archive),
        info.predict_ref,
        info.cog_config,
        info.openapi_schema,
        info.python_packages,
        info.python_version,
        info.gpu,
        info.is_generator,
        info.cog_version,
        created_by,
    )
    row = await conn.fetchrow(
        f"{_VERSIONS} where v.organization_id = $1 and v.model_id = $2 and v.digest = $3", org_id, model_id, digest
    )
    assert row is not None
    return _version(row), new_id is not None


async def set_latest(conn: Conn, *, org_id: UUID, model_id: UUID, version_id: UUID | None) -> None:
    await conn.execute(
        "update models set latest_version_id = $3 where organization_id = $1 and id = $2",
        org_id,
        model_id,
        version_id,
    )


async def get_version(conn: Conn, *, org_id: UUID, version_id: UUID) -> VersionRecord | None:
    row = await conn.fetchrow(f"{_VERSIONS} where v.organization_id = $1 and v.id = $2", org_id, version_id)
    return _version(row) if row else None


async def find_version(conn: Conn, *, org_id: UUID, digest: str, model_id: UUID | None = None) -> VersionRecord | None:
    """The version whose digest (the API's ``version`` string) is ``digest``, within one model
    when ``model_id`` is given."""
    row = await conn.fetchrow(
        f"""{_VERSIONS} where v.organization_id = $1 and v.digest = $2 and ($3::uuid is null or v.model_id = $3)
            order by v.created_at desc limit 1""",
        org_id,
        digest,
        model_id,
    )
    return _version(row) if row else None


async def latest_version(conn: Conn, *, org_id: UUID, model_id: UUID) -> VersionRecord | None:
    """The newest version still there (what ``latest_version_id`` should point at)."""
    row = await conn.fetchrow(
        f"""{_VERSIONS} where v.organization_id = $1 and v.model_id = $2
            order by v.created_at desc, v.id desc limit 1""",
        org_id,
        model_id,
    )
    return _version(row) if row else None


async def versions_of(conn: Conn, *, org_id: UUID, version_ids: list[UUID]) -> dict[UUID, VersionRecord]:
    """Several versions at once, by id (the latest versions of a page of models)."""
    if not version_ids:
        return {}
    rows = await conn.fetch(f"{_VERSIONS} where v.organization_id = $1 and v.id = any($2::uuid[])", org_id, version_ids)
    return {r["id"]: _version(r) for r in rows}


async def page_versions(
    conn: Conn, *, org_id: UUID, model_id: UUID, limit: int, after: tuple[datetime, UUID] | None
) -> list[VersionRecord]:
    """Newest first: ``limit + 1`` versions at most past ``after`` (``keyset.page``)."""
    sql = f"{_VERSIONS} where v.organization_id = $1 and v.model_id = $2"
    rows = await keyset.page(conn, sql, org_id, model_id, after=after, limit=limit, key=("v.created_at", "v.id"))
    return [_version(r) for r in rows]


async def get_archive(conn: Conn, *, org_id: UUID, version_id: UUID) -> bytes | None:
    """The version's tar.gz."""
    data: bytes | None = await conn.fetchval(
        "select archive from model_versions where organization_id = $1 and id = $2", org_id, version_id
    )
    return data


async def delete_version(conn: Conn, *, org_id: UUID, version_id: UUID) -> bool:
    """Deletes one version; raises asyncpg's ForeignKeyViolationError while a deployment or a
    replica uses it."""
    done = await conn.fetchval(
        "delete from model_versions where organization_id = $1 and id = $2 returning true", org_id, version_id
    )
    return bool(done)
