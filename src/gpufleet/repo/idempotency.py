"""Idempotency keys: a retried POST finds the response its first try committed.

``claim`` runs first in the transaction that does the work; a concurrent duplicate's claim waits
on the primary key until that transaction ends, then sees its stored response (or, if it rolled
back, claims the key itself). Rows older than the retention count as absent and are recycled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn


@dataclass(frozen=True, slots=True)
class StoredKey:
    request_hash: str
    response_status: int | None  # None: claimed by a transaction that has not stored its response
    response_body: Any


async def claim(
    conn: Conn,
    *,
    org_id: UUID,
    scope: str,
    key: str,
    request_hash: str,
    retention_s: float,
    user_id: UUID | None = None,
) -> StoredKey | None:
    """Take the key for this transaction: None when it is ours now (new, or its old row expired),
    else the live row another request stored."""
    claimed = await conn.fetchval(
        """insert into idempotency_keys (organization_id, scope, key, request_hash, created_by)
           values ($1, $2, $3, $4, $5)
           on conflict (organization_id, scope, key) do update
              set request_hash = excluded.request_hash, response_status = null, response_body = null,
                  created_by = excluded.created_by, created_at = now()
            where idempotency_keys.created_at < now() - make_interval(secs => $6)
        returning true""",
        org_id,
        scope,
        key,
        request_hash,
        user_id,
        retention_s,
    )
    if claimed:
        return None
    row = await conn.fetchrow(
        """select request_hash, response_status, response_body from idempotency_keys
            where organization_id = $1 and scope = $2 and key = $3""",
        org_id,
        scope,
        key,
    )
    if row is None:  # deleted by retention between the two statements: ours after all
        return await claim(
            conn,
            org_id=org_id,
            scope=scope,
            key=key,
            request_hash=request_hash,
            retention_s=retention_s,
            user_id=user_id,
        )
    return StoredKey(row["request_hash"], row["response_status"], row["response_body"])


async def store_response(conn: Conn, *, org_id: UUID, scope: str, key: str, status: int, body: Any) -> None:
    """The response of the request that claimed the key, committed with its work."""
    await conn.execute(
        """update idempotency_keys set response_status = $4, response_body = $5
            where organization_id = $1 and scope = $2 and key = $3""",
        org_id,
        scope,
        key,
        status,
        body,
    )


async def delete_expired(conn: Conn, *, retention_s: float, limit: int) -> int:
    """System path: up to ``limit`` keys older than the retention, oldest first."""
    result = await conn.execute(
        """delete from idempotency_keys where (organization_id, scope, key) in (
               select organization_id, scope, key from idempotency_keys
                where created_at < now() - make_interval(secs => $1)
                order by created_at limit $2)""",
        retention_s,
        limit,
    )
    return int(result.split()[-1])
