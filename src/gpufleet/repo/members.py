"""Organization members and invites."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.tenancy import Role
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper


@dataclass(frozen=True, slots=True)
class Member:
    user_id: UUID
    organization_id: UUID
    email: str
    name: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Invite:
    id: UUID
    organization_id: UUID
    email: str
    role: Role
    invited_by: UUID | None
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MembershipOf:
    organization_id: UUID
    organization_name: str
    organization_slug: str
    role: Role


_member = mapper(Member, role=Role)


_invite = mapper(Invite, role=Role)
_invites = Table(
    "organization_invites", _invite, insert="organization_id, email, role, token_hash, invited_by, expires_at"
)


_MEMBER_SELECT = """select m.user_id, m.organization_id, m.role, m.created_at, u.email, u.name
                      from organization_members m join users u on u.id = m.user_id"""


async def page(conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None) -> list[Member]:
    """Oldest first: ``limit + 1`` members at most past ``after`` (``keyset.page``)."""
    sql = f"{_MEMBER_SELECT} where m.organization_id = $1"
    key = ("m.created_at", "m.user_id")
    return [_member(r) for r in await keyset.page(conn, sql, org_id, after=after, limit=limit, key=key, ascending=True)]


async def get(conn: Conn, *, org_id: UUID, user_id: UUID, for_update: bool = False) -> Member | None:
    lock = " for update of m" if for_update else ""
    row = await conn.fetchrow(
        f"{_MEMBER_SELECT} where m.organization_id = $1 and m.user_id = $2{lock}", org_id, user_id
    )
    return _member(row) if row else None


async def owners(conn: Conn, *, org_id: UUID) -> list[UUID]:
    """Owner user ids, locked so that two concurrent demotions cannot remove the last owner."""
    rows = await conn.fetch(
        "select user_id from organization_members where organization_id = $1 and role = 'owner' for update",
        org_id,
    )
    return [r["user_id"] for r in rows]


async def set_role(conn: Conn, *, org_id: UUID, user_id: UUID, role: Role) -> Member | None:
    await conn.execute(
        "update organization_members set role = $3 where organization_id = $1 and user_id = $2",
        org_id,
        user_id,
        role.value,
    )
    return await get(conn, org_id=org_id, user_id=user_id)


async def remove(conn: Conn, *, org_id: UUID, user_id: UUID) -> bool:
    status = await conn.execute(
        "delete from organization_members where organization_id = $1 and user_id = $2", org_id, user_id
    )
    return bool(status == "DELETE 1")


async def revoke_keys_of(conn: Conn, *, org_id: UUID, user_id: UUID) -> None:
    await conn.execute(
        """update api_keys set revoked_at = now()
            where organization_id = $1 and user_id = $2 and revoked_at is null""",
        org_id,
        user_id,
    )


async def memberships_of(conn: Conn, *, user_id: UUID) -> list[MembershipOf]:
    """Every organization of a user: across tenants, so only on the system path."""
    rows = await conn.fetch(
        """select o.id, o.name, o.slug, m.role from organization_members m
             join organizations o on o.id = m.organization_id
            where m.user_id = $1 order by o.created_at, o.id""",
        user_id,
    )
    return [MembershipOf(r["id"], r["name"], r["slug"], Role(r["role"])) for r in rows]


async def create_invite(
    conn: Conn,
    *,
    org_id: UUID,
    email: str,
    role: Role,
    token_hash: bytes,
    invited_by: UUID,
    expires_at: datetime,
) -> Invite:
    return await _invites.insert(conn, org_id, email, role.value, token_hash, invited_by, expires_at)


async def invites_page(conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None) -> list[Invite]:
    """Newest first: ``limit + 1`` invites at most past ``after`` (``keyset.page``)."""
    sql = "select * from organization_invites where organization_id = $1"
    return [_invite(r) for r in await keyset.page(conn, sql, org_id, after=after, limit=limit)]


async def revoke_invite(conn: Conn, *, org_id: UUID, invite_id: UUID) -> Invite | None:
    row = await conn.fetchrow(
        """update organization_invites set revoked_at = coalesce(revoked_at, now())
            where organization_id = $1 and id = $2 and accepted_at is null returning *""",
        org_id,
        invite_id,
    )
    return _invite(row) if row else None


async def get_invite(conn: Conn, *, org_id: UUID, invite_id: UUID) -> Invite | None:
    return await _invites.get(conn, org_id, invite_id)


async def claim_invite(conn: Conn, *, token_hash: bytes) -> tuple[Invite, bool] | None:
    """Lock an invite by token (system path); the bool says whether it can still be accepted now."""
    row = await conn.fetchrow(
        """select *, (accepted_at is null and revoked_at is null and expires_at > now()) as usable
             from organization_invites where token_hash = $1 for update""",
        token_hash,
    )
    if row is None:
        return None
    return _invite(row), bool(row["usable"])


async def mark_invite_accepted(conn: Conn, *, invite_id: UUID, user_id: UUID) -> None:
    await conn.execute(
        "update organization_invites set accepted_at = now(), accepted_by = $2 where id = $1", invite_id, user_id
    )


async def has_email(conn: Conn, *, org_id: UUID, email: str) -> bool:
    return bool(
        await conn.fetchval(
            """select exists (select 1 from organization_members m join users u on u.id = m.user_id
                               where m.organization_id = $1 and lower(u.email) = lower($2))""",
            org_id,
            email,
        )
    )
