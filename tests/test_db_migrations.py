"""Migrations: from empty, idempotent re-run, concurrent upgraders, tampering detected."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gpufleet.db import migrate
from gpufleet.errors import ConfigurationError
from tests.pg import PgServer, unique_name


@pytest.fixture
async def empty_db(pg_server: PgServer):  # type: ignore[no-untyped-def]
    name = unique_name("m")
    await pg_server.create_database(name)
    yield pg_server.dsn(name)
    await pg_server.drop_database(name)


async def test_from_empty_then_noop(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        applied = await migrate.upgrade(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.available()]
        assert await migrate.is_current(conn)
        tables = await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'")
        assert await migrate.upgrade(conn) == []
        assert await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'") == tables
        statuses = await migrate.status(conn)
        assert all(s.applied_at is not None for s in statuses)
    finally:
        await conn.close()


async def test_concurrent_upgraders_apply_each_migration_once(empty_db: str) -> None:
    conns = [await asyncpg.connect(empty_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate.upgrade(c) for c in conns))
        applied = [m.version for r in results for m in r]
        assert sorted(applied) == [m.version for m in migrate.available()]
        rows = await conns[0].fetchval("select count(*) from schema_migrations")
        assert rows == len(migrate.available())
    finally:
        for c in conns:
            await c.close()


async def test_changed_migration_is_refused(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.upgrade(conn)
        await conn.execute("update schema_migrations set checksum = 'tampered' where version = 1")
        with pytest.raises(ConfigurationError, match="changed after it was applied"):
            await migrate.upgrade(conn)
    finally:
        await conn.close()


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrate.available()]
    assert versions == list(range(1, len(versions) + 1))


async def test_user_actors_are_rewritten_to_one_format(empty_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """0020: an administrative event written before it named its user by the bare id; after it,
    as every other event does ("user:<id>"); actors that are not a user id stay as they were."""
    every = migrate.available()
    before = [m for m in every if m.name != "one_actor_format"]
    assert len(before) == len(every) - 1
    conn = await asyncpg.connect(empty_db)
    try:
        monkeypatch.setattr(migrate, "available", lambda: before)
        await migrate.upgrade(conn)
        org = await conn.fetchval("insert into organizations (name, slug) values ('o', 'o') returning id")
        await conn.execute(  # a webhook: each event below fans out into a delivery carrying its actor
            "insert into webhooks (organization_id, url, secret_ciphertext) values ($1, 'https://h.example', 'x')", org
        )
        user = "0b5c3a52-2f0e-4a3e-9a39-6c1f0d7c1e21"
        for actor in (user, f"user:{user}", "host:gpu-7", "scheduler", None):
            await conn.execute(
                "insert into events (organization_id, entity_type, entity_id, type, actor)"
                " values ($1, 'host', gen_random_uuid(), 'host.drained', $2)",
                org,
                actor,
            )
        sent = await conn.fetchval(  # the first event's delivery went out already: it stays as it was sent
            "update webhook_deliveries set status = 'succeeded' where event_seq = (select min(seq) from events)"
            " returning id"
        )
        await conn.execute(  # and its event again, still to be sent
            "insert into events (organization_id, entity_type, entity_id, type, actor)"
            " values ($1, 'host', gen_random_uuid(), 'host.drained', $2)",
            org,
            user,
        )
        monkeypatch.setattr(migrate, "available", lambda: every)
        assert [m.name for m in await migrate.upgrade(conn)] == ["one_actor_format"]
        actors = [r["actor"] for r in await conn.fetch("select actor from events order by seq")]
        assert actors == [f"user:{user}", f"user:{user}", "host:gpu-7", "scheduler", None, f"user:{user}"]
        deliveries = await conn.fetch("select id, payload #>> '{data,actor}' as actor from webhook_deliveries")
        assert sorted((r["id"] == sent, r["actor"]) for r in deliveries if r["actor"] is not None) == sorted(
            [
                (True, user),
                (False, f"user:{user}"),
                (False, "host:gpu-7"),
                (False, "scheduler"),
                (False, f"user:{user}"),
            ]
        )
    finally:
        await conn.close()
