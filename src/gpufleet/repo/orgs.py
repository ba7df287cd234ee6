"""Organizations, their members, and users."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain import Membership, Organization, Role, User


def _org(row: asyncpg.Record) -> Organization:
    return Organization(
        id=row["id"],
        name=row["name"],
        slug=row["slug"],
        settings=row["settings"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        external_id=row["external_id"],
        is_active=row["is_active"],
        created_at=row["created_at"],
    )


async def create(
    conn: Conn, *, org_id: UUID, name: str, slug: str, settings: dict[str, Any] | None = None
) -> Organization:
    # The id is chosen by the caller so the transaction's tenant can be set before the insert.
    row = await conn.fetchrow(
        "insert into organizations (id, name, slug, settings) values ($1, $2, $3, $4) returning *",
        org_id,
        name,
        slug,
        settings or {},
    )
    assert row is not None
    return _org(row)


async def get(conn: Conn, *, org_id: UUID) -> Organization | None:
    row = await conn.fetchrow("select * from organizations where id = $1", org_id)
    return _org(row) if row else None


async def create_user(conn: Conn, *, email: str, name: str = "", external_id: str | None = None) -> User:
    row = await conn.fetchrow(
        "insert into users (email, name, external_id) values ($1, $2, $3) returning *",
        email,
        name,
        external_id,
    )
    assert row is not None
    return _user(row)


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
