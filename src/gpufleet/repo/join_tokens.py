"""Join tokens: what lets an agent register a host in an organization."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import JoinToken
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper

# A token that could still register a host.
_USABLE = "(revoked_at is null and expires_at > now() and (max_uses is null or uses < max_uses))"


_token = mapper(JoinToken)
_join_tokens = Table("join_tokens", _token)


async def create(
    conn: Conn,
    *,
    org_id: UUID,
    name: str,
    prefix: str,
    token_hash: bytes,
    max_uses: int | None,
    expires_in: timedelta,
    created_by: UUID | None,
) -> JoinToken:
    row = await conn.fetchrow(
        """insert into join_tokens (organization_id, name, prefix, token_hash, max_uses, expires_at, created_by)
           values ($1, $2, $3, $4, $5, now() + $6::interval, $7) returning *""",
        org_id,
        name,
        prefix,
        token_hash,
        max_uses,
        expires_in,
        created_by,
    )
    assert row is not None
    return _token(row)


async def get(conn: Conn, *, org_id: UUID, token_id: UUID) -> JoinToken | None:
    return await _join_tokens.get(conn, org_id, token_id)


async def revoke(conn: Conn, *, org_id: UUID, token_id: UUID) -> JoinToken | None:
    """Revoke once; revoking again keeps the first time. ``None``: no such token in the org."""
    return await _join_tokens.revoke(conn, org_id, token_id)


async def consume(conn: Conn, *, token_hash: bytes) -> JoinToken | None:
    """Use the token once if it is valid now: the system path (the tenant is not known yet).

    The guard is in the UPDATE itself, so concurrent registrations serialise on the row and
    can never exceed ``max_uses``. ``None``: unknown, revoked, expired or used up.
    """
    row = await conn.fetchrow(
        """update join_tokens set uses = uses + 1
            where token_hash = $1 and revoked_at is null and expires_at > now()
              and (max_uses is null or uses < max_uses)
        returning *""",
        token_hash,
    )
    return _token(row) if row else None


async def find_by_hash(conn: Conn, *, token_hash: bytes) -> tuple[JoinToken, bool] | None:
    """The token with this hash and whether it has expired (by the database clock); system path."""
    row = await conn.fetchrow(
        "select *, expires_at <= now() as expired from join_tokens where token_hash = $1", token_hash
    )
    return (_token(row), bool(row["expired"])) if row else None


async def page(
    conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None, include_inactive: bool = False
) -> list[JoinToken]:
    """Newest first: ``limit + 1`` tokens at most past ``after`` (``keyset.page``); without
    ``include_inactive`` only usable tokens."""
    sql = f"select * from join_tokens where organization_id = $1 and ($2 or {_USABLE})"
    return [_token(r) for r in await keyset.page(conn, sql, org_id, include_inactive, after=after, limit=limit)]
