"""Join tokens: an organization admin creates one; an agent spends it once to register a host."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from gpufleet import security
from gpufleet.db.pool import Connection, Database
from gpufleet.domain.hosts import IssuedJoinToken, JoinToken
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput, NotFound, Unauthorized
from gpufleet.repo import events
from gpufleet.repo import join_tokens as repo
from gpufleet.services.auth import secret_hash

MAX_LIFETIME = timedelta(days=365)


async def create_join_token(
    db: Database,
    ctx: TenantContext,
    *,
    name: str = "",
    max_uses: int | None = None,
    expires_in: timedelta = timedelta(days=1),
) -> IssuedJoinToken:
    """A new token; its secret is in the result and nowhere else (only its SHA-256 is stored)."""
    org_id, created_by = ctx.org_id, ctx.user_id
    if len(name) > 200 or not name.isprintable():
        raise InvalidInput("name must be printable text of at most 200 characters", field="name")
    if max_uses is not None and max_uses < 1:
        raise InvalidInput("max_uses must be at least 1, or empty for unlimited use", field="max_uses")
    if not timedelta(seconds=60) <= expires_in <= MAX_LIFETIME:
        raise InvalidInput("expires_in must be between 1 minute and 365 days", field="expires_in")
    issued = security.issue(security.JOIN_TOKEN)
    async with db.transaction(org_id, user_id=created_by) as conn:
        token = await repo.create(
            conn,
            org_id=org_id,
            name=name,
            prefix=issued.display_prefix,
            token_hash=issued.hash,
            max_uses=max_uses,
            expires_in=expires_in,
            created_by=created_by,
        )
        # Join tokens are not an event entity of their own: the organization records them.
        await events.record(
            conn,
            ctx,
            "organization",
            org_id,
            "join_token.created",
            {"token_id": str(token.id), "name": name, "prefix": token.prefix, "max_uses": max_uses},
        )
    return IssuedJoinToken(token, issued.secret)


async def revoke_join_token(db: Database, ctx: TenantContext, *, token_id: UUID) -> JoinToken:
    """Revoke a token (idempotent); hosts it registered keep their own credentials."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        before = await repo.get(conn, org_id=org_id, token_id=token_id)
        token = await repo.revoke(conn, org_id=org_id, token_id=token_id)
        if before is None or token is None:
            raise NotFound(f"join token {token_id} not found")
        if before.revoked_at is None:
            await events.record(
                conn,
                ctx,
                "organization",
                org_id,
                "join_token.revoked",
                {"token_id": str(token_id), "prefix": token.prefix},
            )
        return token


async def consume(conn: Connection, secret: str) -> JoinToken:
    """Spend one use of a join token inside the caller's system transaction.

    Refuses (``Unauthorized``) a malformed secret before any lookup, then an unknown, revoked,
    expired or used-up token, each with its own message. The use is counted by a guarded UPDATE,
    so concurrent registrations can never exceed ``max_uses``; a registration that fails later
    rolls the use back with everything else.
    """
    token_hash = secret_hash(
        secret, security.JOIN_TOKEN, "malformed join token: copy the whole gfj_... token shown when it was created"
    )
    token = await repo.consume(conn, token_hash=token_hash)
    if token is not None:
        return token
    found = await repo.find_by_hash(conn, token_hash=token_hash)
    if found is None:
        raise Unauthorized("unknown join token")
    existing, expired = found
    if existing.revoked_at is not None:
        raise Unauthorized(f"join token {existing.prefix} was revoked; ask an admin for a new one")
    if expired:
        raise Unauthorized(f"join token {existing.prefix} expired; ask an admin for a new one")
    raise Unauthorized(
        f"join token {existing.prefix} has been used {existing.uses} of {existing.max_uses} times; "
        "ask an admin for a new one"
    )
