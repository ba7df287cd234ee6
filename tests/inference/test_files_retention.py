"""Expired files disappear from reads at once and from the table at the next sweep."""

from __future__ import annotations

import pytest

from gpufleet.background import files_retention
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.errors import NotFound
from gpufleet.services import files
from tests.factories import create_org, ctx_for


async def test_expired_files_are_hidden_then_swept(db: Database) -> None:
    org = await create_org(db)
    settings = Settings()
    keep = await files.upload(db, ctx_for(org.id), settings, name="keep.txt", content_type="text/plain", data=b"keep")
    gone = await files.upload(db, ctx_for(org.id), settings, name="gone.txt", content_type="text/plain", data=b"gone")
    async with db.system_transaction() as conn:
        await conn.execute("update files set expires_at = now() - interval '1 second' where id = $1", gone.id)
    with pytest.raises(NotFound):
        await files.download(db, ctx_for(org.id), gone.id)
    assert (await files.download(db, ctx_for(org.id), keep.id))[1] == b"keep"
    assert await files_retention.run_once(db, batch=1) == 1
    assert await files_retention.run_once(db) == 0
    async with db.system_transaction() as conn:
        ids = [r["id"] for r in await conn.fetch("select id from files")]
    assert ids == [keep.id]
