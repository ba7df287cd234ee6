"""Lint over the live catalog: the tenancy rules hold for every table, policy, function and view."""

from __future__ import annotations

from gpufleet.db.pool import RUNTIME_ROLE, SYSTEM_ROLE, Database


async def test_rls_enabled_and_forced_on_every_table_with_organization_id(db: Database) -> None:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            """select c.relname, c.relrowsecurity, c.relforcerowsecurity
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = 'public' and c.relkind in ('r', 'p')
                  and exists (select 1 from pg_attribute a where a.attrelid = c.oid
                              and a.attname = 'organization_id' and not a.attisdropped)"""
        )
    assert len(rows) >= 20
    bad = [r["relname"] for r in rows if not (r["relrowsecurity"] and r["relforcerowsecurity"])]
    assert bad == []


async def test_no_policy_is_open_to_everyone(db: Database) -> None:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            "select tablename, policyname, roles, qual, with_check from pg_policies where schemaname = 'public'"
        )
    assert rows
    for r in rows:
        roles = set(r["roles"])
        assert "public" not in roles, f"{r['tablename']}.{r['policyname']} applies to PUBLIC"
        if r["qual"] in ("true", None) and r["with_check"] in ("true", None):
            # Only the explicitly named all-tenants path may have an unconditional policy.
            assert roles == {SYSTEM_ROLE}, f"{r['tablename']}.{r['policyname']} is USING (true) for {roles}"


async def test_every_tenant_table_has_a_tenant_policy_for_the_runtime_role(db: Database) -> None:
    async with db.owner_connection() as conn:
        missing = await conn.fetch(
            f"""select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
                   and c.relrowsecurity
                   and exists (select 1 from pg_attribute a where a.attrelid = c.oid
                               and a.attname in ('organization_id') and not a.attisdropped)
                   and not exists (select 1 from pg_policies p where p.tablename = c.relname
                                   and '{RUNTIME_ROLE}' = any(p.roles))"""
        )
    assert [r[0] for r in missing] == []


async def test_security_definer_functions_pin_search_path(db: Database) -> None:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            """select p.proname, p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'public' and p.prosecdef"""
        )
    for r in rows:
        config = r["proconfig"] or []
        assert any(c.startswith("search_path=") for c in config), f"{r['proname']} does not pin search_path"


async def test_views_are_security_invoker(db: Database) -> None:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            """select c.relname, c.reloptions from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = 'public' and c.relkind in ('v', 'm')"""
        )
    for r in rows:
        assert "security_invoker=true" in (r["reloptions"] or []), f"view {r['relname']} is not security_invoker"


async def test_runtime_role_is_least_privileged(db: Database) -> None:
    async with db.owner_connection() as conn:
        role = await conn.fetchrow(
            "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = $1",
            RUNTIME_ROLE,
        )
        owned = await conn.fetchval(
            """select count(*) from pg_class c join pg_roles r on r.oid = c.relowner
                where r.rolname = $1""",
            RUNTIME_ROLE,
        )
        member_of_system = await conn.fetchval("select pg_has_role($1, $2, 'member')", RUNTIME_ROLE, SYSTEM_ROLE)
        system = await conn.fetchrow(
            "select rolsuper, rolbypassrls, rolcanlogin from pg_roles where rolname = $1", SYSTEM_ROLE
        )
    assert role is not None and not any(role.values())
    assert owned == 0
    assert member_of_system is False
    assert system is not None and not any(system.values())


async def test_every_table_has_timestamps_and_touch_trigger(db: Database) -> None:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            """select c.relname,
                      bool_or(a.attname = 'created_at') as has_created,
                      bool_or(a.attname = 'updated_at') as has_updated,
                      exists (select 1 from pg_trigger t where t.tgrelid = c.oid and t.tgname = c.relname || '_touch')
                          as has_trigger
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
                  and c.relname <> 'schema_migrations'
                group by c.oid, c.relname"""
        )
    assert len(rows) >= 20
    bad = [r["relname"] for r in rows if not (r["has_created"] and r["has_updated"] and r["has_trigger"])]
    assert bad == []


async def test_updated_at_is_kept_by_the_trigger(db: Database) -> None:
    from tests.factories import create_org

    org = await create_org(db)
    async with db.system_transaction() as conn:
        before = await conn.fetchval("select updated_at from organizations where id = $1", org.id)
    async with db.system_transaction() as conn:
        after = await conn.fetchval(
            "update organizations set name = 'Renamed' where id = $1 returning updated_at", org.id
        )
    assert after > before
