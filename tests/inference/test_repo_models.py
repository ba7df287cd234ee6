"""repo.models against PostgreSQL: content-addressed versions, tenant isolation, archives."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.models import Hardware
from gpufleet.inference import archive, cog_schema
from gpufleet.repo import models
from tests.factories import create_org

ECHO = Path(__file__).resolve().parents[2] / "examples" / "models" / "echo"


async def test_models_and_versions_round_trip(db: Database) -> None:
    org, other = await create_org(db, "Acme"), await create_org(db, "Other")
    data = archive.pack(ECHO)
    info = cog_schema.derive(archive.read_files(data))
    digest = archive.version_digest(org.slug or "acme", "echo", data)
    async with db.transaction(org.id) as conn:
        m = await models.create_model(
            conn, org_id=org.id, name="echo", description="d", hardware=Hardware.of(gpu_fraction=0.25), created_by=None
        )
        assert m is not None and m.hardware.gpu_milli == 250 and m.hardware.gpu_count == 1
        assert (
            await models.create_model(
                conn, org_id=org.id, name="echo", description="", hardware=Hardware(), created_by=None
            )
            is None
        )
        v, created = await models.insert_version(
            conn, org_id=org.id, model_id=m.id, digest=digest, archive=data, info=info, created_by=None
        )
        again, created_again = await models.insert_version(
            conn, org_id=org.id, model_id=m.id, digest=digest, archive=data, info=info, created_by=None
        )
        assert created and not created_again and again.id == v.id
        await models.set_latest(conn, org_id=org.id, model_id=m.id, version_id=v.id)
        got = await models.get_model(conn, org_id=org.id, name="echo")
        assert got is not None and got.latest_version_id == v.id
        found = await models.find_version(conn, org_id=org.id, digest=digest)
        assert found is not None and found.id == v.id and found.model_name == "echo"
        assert found.openapi_schema == info.openapi_schema and found.concurrency == 1
        assert (await models.get_version(conn, org_id=org.id, version_id=v.id)) == found
        assert await models.get_archive(conn, org_id=org.id, version_id=v.id) == data
        assert [x.id for x in await models.page_versions(conn, org_id=org.id, model_id=m.id, limit=10, after=None)] == [
            v.id
        ]
        assert [x.id for x in await models.page_models(conn, org_id=org.id, limit=10, after=None)] == [m.id]
    async with db.transaction(other.id) as conn:  # another tenant sees nothing
        assert await models.get_model(conn, org_id=other.id, name="echo") is None
        assert await models.get_version(conn, org_id=other.id, version_id=v.id) is None
        assert await models.find_version(conn, org_id=other.id, digest=digest) is None
        assert await models.get_model(conn, org_id=org.id, name="echo") is None  # RLS, even asked by id
    async with db.transaction(org.id) as conn:
        assert await models.delete_version(conn, org_id=org.id, version_id=v.id)
        got = await models.get_model(conn, org_id=org.id, name="echo")
        assert got is not None and got.latest_version_id is None  # the foreign key clears it
        assert await models.delete_model(conn, org_id=org.id, model_id=m.id)


async def test_the_database_refuses_bad_names(db: Database) -> None:
    org = await create_org(db)
    with pytest.raises(asyncpg.CheckViolationError):
        async with db.transaction(org.id) as conn:
            await models.create_model(
                conn, org_id=org.id, name="Bad Name", description="", hardware=Hardware(), created_by=None
            )
