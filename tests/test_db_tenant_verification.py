"""The database verifies the tenant: a runtime-role session cannot switch organization by itself.

What an attacker with SQL access as ``gpufleet_app`` (say, through an injection) can do to the
tenant settings, and that none of it shows another organization's rows (docs/security.md).
"""

from __future__ import annotations

import os

import asyncpg
import pytest

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.tenancy import Organization
from tests.factories import create_org
from tests.tenancy import TENANT_TABLES_SQL, populate


async def _two_orgs(db: Database) -> tuple[Organization, Organization, list[str]]:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    await populate(db, a)
    await populate(db, b)
    async with db.owner_connection() as conn:
        tables = [r[0] for r in await conn.fetch(TENANT_TABLES_SQL)]
    return a, b, tables


def _col(table: str) -> str:
    return "id" if table == "organizations" else "organization_id"


async def _visible(conn: Connection, tables: list[str], org: Organization) -> dict[str, int]:
    seen = {}
    for t in tables:
        n = await conn.fetchval(f"select count(*) from {t} where {_col(t)} = $1", org.id)
        if n:
            seen[t] = n
    return seen


async def test_set_config_inside_a_tenant_transaction_does_not_switch_tenant(db: Database) -> None:
    a, b, tables = await _two_orgs(db)
    async with db.transaction(a.id) as conn:
        assert await _visible(conn, tables, a)  # the verified tenant sees its rows
        await conn.execute("select set_config('gpufleet.org_id', $1, true)", str(b.id))
        assert await _visible(conn, tables, b) == {}, "another organization's rows through set_config"
        assert await _visible(conn, tables, a) == {}  # the changed setting no longer verifies at all
        assert await conn.fetchval("select count(*) from users") == 0


async def test_a_bare_runtime_session_with_forged_settings_sees_nothing(db: Database) -> None:
    a, b, tables = await _two_orgs(db)
    conn = await asyncpg.connect(db.runtime_dsn_)
    try:
        assert await conn.fetchval("select current_user") == "gpufleet_app"
        async with conn.transaction():
            await conn.execute(
                "select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.tenant_tag', $2, true)",
                str(b.id),
                os.urandom(32).hex(),
            )
            assert await _visible(conn, tables, b) == {}
            assert await conn.fetchval("select gpufleet_current_org()") is None
        # A real tag of organization A, replayed with B's id (or another user's), verifies nothing.
        tag_a = await db.tenant_tag(str(a.id), "")
        async with conn.transaction():
            await conn.execute(
                "select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.tenant_tag', $2, true)",
                str(b.id),
                tag_a,
            )
            assert await _visible(conn, tables, b) == {}
        async with conn.transaction():
            user = await _a_user(db, b)
            await conn.execute(
                """select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.user_id', $2, true),
                          set_config('gpufleet.tenant_tag', $3, true)""",
                str(a.id),
                str(user),
                tag_a,
            )
            assert await conn.fetchval("select gpufleet_current_user()") is None
            assert await conn.fetchval("select count(*) from users where id = $1", user) == 0
    finally:
        await conn.close()


async def _a_user(db: Database, org: Organization) -> object:
    async with db.system_transaction() as conn:
        return await conn.fetchval("select user_id from organization_members where organization_id = $1", org.id)


async def test_the_runtime_role_cannot_read_the_key_or_rotate_it(db: Database) -> None:
    conn = await asyncpg.connect(db.runtime_dsn_)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("select secret from gpufleet_tenant_key")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("select gpufleet_rotate_tenant_key()")
        # A temporary table of the same name does not stand in for the key in the check.
        await conn.execute(
            "create temp table gpufleet_tenant_key as select true as id, '\\x00'::bytea as secret,"
            " '\\x00'::bytea as ipad, '\\x00'::bytea as opad"
        )
        async with conn.transaction():
            org = await create_org(db)
            tag = await conn.fetchval(
                "select encode(sha256('\\x00'::bytea || sha256('\\x00'::bytea || convert_to($1 || '/', 'UTF8'))), 'hex')",
                str(org.id),
            )
            await conn.execute(
                "select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.tenant_tag', $2, true)",
                str(org.id),
                tag,
            )
            assert await conn.fetchval("select gpufleet_current_org()") is None
            assert await conn.fetchval("select count(*) from organizations") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("flat", [False, True], ids=["transaction", "flat_transaction"])
async def test_the_tag_never_shows_in_another_sessions_view_of_the_query(db: Database, flat: bool) -> None:
    org = await create_org(db)
    tag = await db.tenant_tag(str(org.id), "")
    spy = await asyncpg.connect(db.runtime_dsn_)
    try:
        opened = db.flat_transaction(org.id) if flat else db.transaction(org.id)
        async with opened as conn:
            # The victim is idle in its transaction right after setting its tenant: that
            # statement is what every other runtime-role session can read of it now.
            rows = await spy.fetch("select query from pg_stat_activity where usename = 'gpufleet_app'")
            assert any("gpufleet.tenant_tag" in (r["query"] or "") for r in rows)
            assert all(tag not in (r["query"] or "") for r in rows)
            assert await conn.fetchval("select current_setting('gpufleet.tenant_tag')") == tag
    finally:
        await spy.close()


async def test_the_check_runs_once_per_statement_not_per_row(db: Database) -> None:
    org = await create_org(db)
    await populate(db, org)
    async with db.transaction(org.id) as conn:
        plan = "\n".join(
            r[0] for r in await conn.fetch("explain select * from hosts h join jobs j on j.host_id = h.id")
        )
    assert "InitPlan" in plan and "SubPlan" not in plan, plan


async def test_a_temporary_table_does_not_stand_in_for_a_tenant_table(db: Database) -> None:
    conn = await asyncpg.connect(db.runtime_dsn_)
    try:
        await conn.execute("create temp table hosts (id uuid, organization_id uuid)")
        which = "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = 'hosts'::regclass"
        assert await conn.fetchval(which) == "public"  # not pg_temp_N
        await conn.execute("set search_path = pg_temp, public")
        assert (await conn.fetchval(which)).startswith("pg_temp")
        await conn.execute("reset all")  # what the pool does on release: the role's default comes back
        assert await conn.fetchval(which) == "public"
    finally:
        await conn.close()
