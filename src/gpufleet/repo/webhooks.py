"""Webhook endpoints: every SQL statement about the ``webhooks`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.webhooks import Webhook
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, assignments, from_row, mapper

_COLUMNS = frozenset({"url", "description", "event_types", "is_active"})


_webhook = mapper(Webhook, event_types=list, enabled=from_row(lambda r: r["is_active"]))
_webhooks = Table(
    "webhooks",
    _webhook,
    insert="organization_id, url, description, event_types, secret_ciphertext, is_active, created_by",
)


async def create(
    conn: Conn,
    *,
    org_id: UUID,
    url: str,
    description: str,
    event_types: list[str],
    secret_ciphertext: bytes,
    enabled: bool,
    created_by: UUID | None,
) -> Webhook:
    return await _webhooks.insert(conn, org_id, url, description, event_types, secret_ciphertext, enabled, created_by)


async def get(conn: Conn, *, org_id: UUID, webhook_id: UUID, for_update: bool = False) -> Webhook | None:
    return await _webhooks.get(conn, org_id, webhook_id, lock="update" if for_update else None)


async def page(conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None) -> list[Webhook]:
    """Newest first: ``limit + 1`` endpoints at most past ``after`` (``keyset.page``)."""
    sql = "select * from webhooks where organization_id = $1"
    return [_webhook(r) for r in await keyset.page(conn, sql, org_id, after=after, limit=limit)]


async def update(conn: Conn, *, org_id: UUID, webhook_id: UUID, fields: dict[str, Any]) -> Webhook | None:
    """Change the given columns; enabling clears the disabled and failing marks."""
    sets = assignments(fields, _COLUMNS, start=3)
    if fields.get("is_active") is True:
        sets += ["disabled_at = null", "disabled_reason = null", "failing_since = null"]
    elif fields.get("is_active") is False:
        sets += [
            "disabled_at = coalesce(disabled_at, now())",
            "disabled_reason = coalesce(disabled_reason, 'disabled by an admin')",
        ]
    row = await conn.fetchrow(
        f"update webhooks set {', '.join(sets) or 'updated_at = now()'}"
        " where organization_id = $1 and id = $2 returning *",
        org_id,
        webhook_id,
        *fields.values(),
    )
    return _webhook(row) if row else None


async def delete(conn: Conn, *, org_id: UUID, webhook_id: UUID) -> Webhook | None:
    return await _webhooks.delete(conn, org_id, webhook_id)


async def rotate_secret(
    conn: Conn, *, org_id: UUID, webhook_id: UUID, secret_ciphertext: bytes, overlap_s: float
) -> Webhook | None:
    """The new secret signs from now on; the current one keeps signing beside it for ``overlap_s``."""
    row = await conn.fetchrow(
        """update webhooks
              set previous_secret_ciphertext = case when $4 > 0 then secret_ciphertext end,
                  previous_secret_expires_at = case when $4 > 0 then now() + make_interval(secs => $4) end,
                  secret_ciphertext = $3
            where organization_id = $1 and id = $2 returning *""",
        org_id,
        webhook_id,
        secret_ciphertext,
        float(overlap_s),
    )
    return _webhook(row) if row else None


async def secret(conn: Conn, *, org_id: UUID, webhook_id: UUID) -> bytes | None:
    value: bytes | None = await conn.fetchval(
        "select secret_ciphertext from webhooks where organization_id = $1 and id = $2", org_id, webhook_id
    )
    return value


# -- failure bookkeeping (the delivery worker, on the system path) ---------------------------


async def mark_succeeded(conn: Conn, *, webhook_ids: list[UUID]) -> None:
    if webhook_ids:
        await conn.execute(
            """update webhooks set failing_since = null, failure_count = 0
                where id = any($1::uuid[]) and (failing_since is not null or failure_count <> 0)""",
            webhook_ids,
        )


async def mark_failing(conn: Conn, *, webhook_ids: list[UUID], disable_after_s: float) -> list[Webhook]:
    """Start (or extend) each endpoint's failing streak; the active ones failing longer than
    ``disable_after_s`` are returned so the caller disables them."""
    if not webhook_ids:
        return []
    rows = await conn.fetch(
        """update webhooks set failing_since = coalesce(failing_since, now()), failure_count = failure_count + 1
            where id = any($1::uuid[])
        returning *, is_active and failing_since < now() - make_interval(secs => $2) as overdue""",
        webhook_ids,
        float(disable_after_s),
    )
    return [_webhook(r) for r in rows if r["overdue"]]


async def disable(conn: Conn, *, webhook_id: UUID, reason: str) -> Webhook | None:
    """Switch an endpoint off; None when it was off already (so only one disable records an event)."""
    row = await conn.fetchrow(
        """update webhooks set is_active = false, disabled_at = now(), disabled_reason = $2
            where id = $1 and is_active returning *""",
        webhook_id,
        reason,
    )
    return _webhook(row) if row else None
