"""API keys: stored as SHA-256 only; looked up by hash on the system path to authenticate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.tenancy import ApiKey, Role
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """What an API key authenticates as, judged against the database clock."""

    key_id: UUID
    organization_id: UUID
    user_id: UUID
    key_role: Role
    member_role: Role | None  # None: the user is no longer a member
    user_active: bool
    expired: bool
    revoked: bool
    last_used_at: datetime | None
    expires_at: datetime | None = None


_key = mapper(ApiKey, role=Role)
_api_keys = Table("api_keys", _key, insert="organization_id, user_id, name, prefix, key_hash, role, expires_at")


async def create(
    conn: Conn,
    *,
    org_id: UUID,
    user_id: UUID,
    name: str,
    prefix: str,
    key_hash: bytes,
    role: Role,
    expires_at: datetime | None,
) -> ApiKey:
    return await _api_keys.insert(conn, org_id, user_id, name, prefix, key_hash, role.value, expires_at)


async def get(conn: Conn, *, org_id: UUID, key_id: UUID) -> ApiKey | None:
    return await _api_keys.get(conn, org_id, key_id)


async def page(
    conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None, include_revoked: bool = False
) -> list[ApiKey]:
    """Newest first: ``limit + 1`` keys at most past ``after`` (``keyset.page``)."""
    sql = "select * from api_keys where organization_id = $1 and ($2 or revoked_at is null)"
    return [_key(r) for r in await keyset.page(conn, sql, org_id, include_revoked, after=after, limit=limit)]


async def revoke(conn: Conn, *, org_id: UUID, key_id: UUID) -> ApiKey | None:
    return await _api_keys.revoke(conn, org_id, key_id)


async def principal_by_hash(conn: Conn, *, key_hash: bytes) -> KeyPrincipal | None:
    """Authentication lookup; runs on the system path because the tenant is not known yet."""
    row = await conn.fetchrow(
        """select k.id, k.organization_id, k.user_id, k.role, k.last_used_at, k.expires_at,
                  k.revoked_at is not null as revoked,
                  coalesce(k.expires_at <= now(), false) as expired,
                  m.role as member_role, u.is_active
             from api_keys k
             join users u on u.id = k.user_id
             left join organization_members m on m.organization_id = k.organization_id and m.user_id = k.user_id
            where k.key_hash = $1""",
        key_hash,
    )
    if row is None:
        return None
    return KeyPrincipal(
        key_id=row["id"],
        organization_id=row["organization_id"],
        user_id=row["user_id"],
        key_role=Role(row["role"]),
        member_role=Role(row["member_role"]) if row["member_role"] else None,
        user_active=row["is_active"],
        expired=row["expired"],
        revoked=row["revoked"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
    )


async def touch(conn: Conn, *, key_ids: list[UUID]) -> None:
    """Record use, at most once a minute per key whatever the number of replicas."""
    await conn.execute(
        """update api_keys set last_used_at = now()
            where id = any($1::uuid[]) and (last_used_at is null or last_used_at < now() - interval '1 minute')""",
        key_ids,
    )
