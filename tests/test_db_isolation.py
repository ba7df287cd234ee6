"""Tenant isolation by PostgreSQL itself, generated from the catalog so no table escapes it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from gpufleet.db.pool import Database
from tests.factories import create_org
from tests.tenancy import TENANT_TABLES_SQL, populate


async def _tables(db: Database) -> list[str]:
    async with db.owner_connection() as conn:
        return [r[0] for r in await conn.fetch(TENANT_TABLES_SQL)]


def _org_col(table: str) -> str:
    return "id" if table == "organizations" else "organization_id"


async def test_every_tenant_table_is_isolated(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    await populate(db, a)
    await populate(db, b)
    tables = await _tables(db)
    assert len(tables) >= 20

    for table in tables:
        col = _org_col(table)
        async with db.system_transaction() as conn:
            per_org = {r[0]: r[1] for r in await conn.fetch(f"select {col}, count(*) from {table} group by 1")}
        assert per_org.get(a.id, 0) >= 1 and per_org.get(b.id, 0) >= 1, (
            f"tests/tenancy.py must put a row in {table} for each organization"
        )

        async with db.transaction(a.id) as conn:
            # SELECT: only A's rows, all of them.
            seen = {r[0] for r in await conn.fetch(f"select {col} from {table}")}
            assert seen == {a.id}, f"{table}: org A sees {seen}"
            # UPDATE / DELETE of B's rows touch nothing.
            assert await conn.execute(f"update {table} set {col} = {col} where {col} = $1", b.id) == "UPDATE 0"
            assert await conn.execute(f"delete from {table} where {col} = $1", b.id) == "DELETE 0"
            # Moving A's row to B is refused by WITH CHECK.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(f"update {table} set {col} = $1 where {col} = $2", b.id, a.id)
            # INSERT of a row for B is refused: copy one of A's rows, pointed at B.
            row = await conn.fetchrow(f"select to_jsonb(t) as j from {table} t limit 1")
            assert row is not None
            doc = dict(row["j"])
            doc[col] = str(b.id)
            if "id" in doc and col != "id":
                doc["id"] = str(uuid.uuid4())
            cols = ", ".join(k for k in doc if k not in ("seq",))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        f"insert into {table} ({cols}) select {cols} from jsonb_populate_record(null::{table}, $1)",
                        doc,
                    )

        async with db.system_transaction() as conn:
            after = {r[0]: r[1] for r in await conn.fetch(f"select {col}, count(*) from {table} group by 1")}
        assert after == per_org, f"{table}: rows changed under org A's context"

        # No tenant set at all: nothing is visible.
        async with db.transaction(None) as conn:
            assert await conn.fetchval(f"select count(*) from {table}") == 0, table


async def test_users_are_visible_only_through_membership(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    await populate(db, a)
    await populate(db, b)
    async with db.transaction(a.id) as conn:
        members = await conn.fetchval("select count(*) from users u join organization_members m on m.user_id = u.id")
        total = await conn.fetchval("select count(*) from users")
    assert members == total == 1
    async with db.transaction(None) as conn:
        assert await conn.fetchval("select count(*) from users") == 0


async def test_runtime_role_cannot_escape_with_set_role_or_settings(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    await populate(db, b)
    async with db.transaction(a.id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("set local role gpufleet_system")
        assert await conn.fetchval("select count(*) from jobs") == 0
        assert await conn.fetchval("select rolbypassrls from pg_roles where rolname = current_user") is False
        # Settings: claiming the other tenant without its tag shows nothing of it (the tag is an
        # HMAC under a key the runtime role cannot read), ...
        async with conn.transaction():
            await conn.execute("select set_config('gpufleet.org_id', $1, true)", str(b.id))
            assert await conn.fetchval("select count(*) from jobs") == 0
            assert await conn.fetchval("select count(*) from jobs where organization_id = $1", b.id) == 0
        # ... turning row security off makes a query refuse rather than bypass the policies, ...
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("set local row_security = off")
                await conn.fetchval("select count(*) from jobs")
        # ... and the setting that would skip triggers needs a superuser.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("set local session_replication_role = replica")
    async with db.transaction(b.id) as conn:
        assert await conn.fetchval("select count(*) from jobs") > 0  # there was something to see
