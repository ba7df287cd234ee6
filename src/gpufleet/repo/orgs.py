"""Organizations, their members, and users."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.tenancy import Membership, Organization, Role, User
from gpufleet.repo.rows import Table, mapper

_org = mapper(Organization)
_organizations = Table("organizations", _org, insert="id, name, slug, settings")


_user = mapper(User)


async def create(
    conn: Conn, *, org_id: UUID, name: str, slug: str, settings: dict[str, Any] | None = None
) -> Organization:
    # The id is chosen by the caller so the transaction's tenant can be set before the insert.
    return await _organizations.insert(conn, org_id, name, slug, settings or {})


async def get(conn: Conn, *, org_id: UUID) -> Organization | None:
    row = await conn.fetchrow("select * from organizations where id = $1", org_id)
    return _org(row) if row else None


async def default_org(conn: Conn) -> Organization | None:
    """The first-run organization (slug ``default``), else the oldest one."""
    row = await conn.fetchrow("select * from organizations order by (slug = 'default') desc, created_at, id limit 1")
    return _org(row) if row else None


async def create_user(conn: Conn, *, email: str, name: str = "", external_id: str | None = None) -> User | None:
    """The new user, or ``None`` when the email (or external id) was taken meanwhile.

    Two transactions creating the same account at once (two invites accepted together, two first
    requests of a new Supabase identity) must not end in a unique violation: the later one waits
    for the earlier to commit and then gets ``None``, so its caller can decide what that means.
    """
    row = await conn.fetchrow(
        "insert into users (email, name, external_id) values ($1, $2, $3) on conflict do nothing returning *",
        email,
        name,
        external_id,
    )
    return _user(row) if row else None


async def get_user(conn: Conn, *, user_id: UUID) -> User | None:
    row = await conn.fetchrow("select * from users where id = $1", user_id)
    return _user(row) if row else None


async def add_member(conn: Conn, *, org_id: UUID, user_id: UUID, role: Role) -> Membership:
    row = await conn.fetchrow(
        """insert into organization_members (organization_id, user_id, role) values ($1, $2, $3)
           returning organization_id, user_id, role, created_at""",
        org_id,
        user_id,
        role.value,
    )
    assert row is not None
    return Membership(row["organization_id"], row["user_id"], Role(row["role"]), row["created_at"])


async def count_all(conn: Conn) -> int:
    """Organizations visible to this connection (all of them on the system path)."""
    return int(await conn.fetchval("select count(*) from organizations"))


async def update(
    conn: Conn, *, org_id: UUID, name: str | None = None, settings: dict[str, Any] | None = None
) -> Organization | None:
    row = await conn.fetchrow(
        """update organizations set name = coalesce($2, name), settings = coalesce($3, settings)
            where id = $1 returning *""",
        org_id,
        name,
        settings,
    )
    return _org(row) if row else None


async def delete(conn: Conn, *, org_id: UUID) -> bool:
    return bool(await conn.execute("delete from organizations where id = $1", org_id) == "DELETE 1")


async def blockers(conn: Conn, *, org_id: UUID) -> tuple[int, int]:
    """(hosts, active jobs) that keep an organization from being deleted."""
    row = await conn.fetchrow(
        """select (select count(*) from hosts where organization_id = $1 and revoked_at is null) as hosts,
                  (select count(*) from jobs where organization_id = $1
                      and status in ('allocated', 'running')) as jobs""",
        org_id,
    )
    assert row is not None
    return int(row["hosts"]), int(row["jobs"])


async def slug_taken(conn: Conn, *, slug: str) -> bool:
    """Across tenants (slugs are globally unique): system path only."""
    return bool(await conn.fetchval("select exists (select 1 from organizations where slug = $1)", slug))


async def user_by_email(conn: Conn, *, email: str) -> User | None:
    row = await conn.fetchrow("select * from users where lower(email) = lower($1)", email)
    return _user(row) if row else None


async def user_by_external_id(conn: Conn, *, external_id: str) -> User | None:
    row = await conn.fetchrow("select * from users where external_id = $1", external_id)
    return _user(row) if row else None


async def count_users(conn: Conn) -> int:
    return int(await conn.fetchval("select count(*) from users"))


async def lock_bootstrap(conn: Conn) -> None:
    """Serialise first-run bootstrap between replicas starting together."""
    await conn.execute("select pg_advisory_xact_lock(7142017)")
