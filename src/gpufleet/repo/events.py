"""The events table: every state change, written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.events import Event
from gpufleet.domain.tenancy import TenantContext
from gpufleet.repo import keyset
from gpufleet.repo.rows import mapper

_event = mapper(Event)


async def append(
    conn: Conn,
    org_id: UUID,
    entity_type: str,
    entity_id: UUID,
    type: str,
    data: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> Event:
    """One event of ``entity_type``/``entity_id`` in ``org_id``; ``actor`` None: the system. A use
    case acting for a ``TenantContext`` writes it with ``record``."""
    row = await conn.fetchrow(
        """insert into events (organization_id, entity_type, entity_id, type, data, actor)
           values ($1, $2, $3, $4, $5, $6) returning *""",
        org_id,
        entity_type,
        entity_id,
        type,
        data or {},
        actor,
    )
    assert row is not None
    return _event(row)


async def record(
    conn: Conn, ctx: TenantContext, entity_type: str, entity_id: UUID, type: str, data: dict[str, Any] | None = None
) -> Event:
    """The event of what ``ctx`` did: in its organization, with its actor. ``entity_type`` is not
    always the prefix of ``type`` (a budget's or a join token's events belong to the organization)."""
    return await append(conn, ctx.org_id, entity_type, entity_id, type, data, actor=ctx.actor)


async def for_entity(
    conn: Conn, *, org_id: UUID, entity_type: str, entity_id: UUID, after_seq: int = 0, limit: int = 100
) -> list[Event]:
    """Oldest first: ``limit + 1`` events at most after ``after_seq`` (``keyset.page``)."""
    sql = "select * from events where organization_id = $1 and entity_type = $2 and entity_id = $3"
    rows = await keyset.page(
        conn,
        sql,
        org_id,
        entity_type,
        entity_id,
        after=(after_seq,),
        limit=limit,
        key=("seq",),
        types=("bigint",),
        ascending=True,
    )
    return [_event(r) for r in rows]


async def by_type(conn: Conn, *, org_id: UUID, type: str, limit: int = 100) -> list[Event]:
    rows = await conn.fetch(
        "select * from events where organization_id = $1 and type = $2 order by seq desc limit $3",
        org_id,
        type,
        limit,
    )
    return [_event(r) for r in rows]


async def append_many(
    conn: Conn,
    rows: Sequence[tuple[UUID, str, UUID, str, dict[str, Any]]],
    *,
    actor: str | None = None,
) -> int:
    """Insert ``(org_id, entity_type, entity_id, type, data)`` rows in one statement; the count."""
    if not rows:
        return 0
    orgs, kinds, ids, types, data = (list(col) for col in zip(*rows, strict=True))
    await conn.execute(
        """insert into events (organization_id, entity_type, entity_id, type, data, actor)
           select o, k, e, t, d, $6
             from unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::jsonb[]) as u(o, k, e, t, d)""",
        orgs,
        kinds,
        ids,
        types,
        data,
        actor,
    )
    return len(rows)


async def feed(
    conn: Conn,
    *,
    org_id: UUID,
    after_seq: int,
    entity_type: str | None = None,
    limit: int = 200,
    type_pattern: str | None = None,
    entity_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Event]:
    """An organization's events after ``after_seq``, oldest first: the change feed. ``type_pattern``
    is a subscription pattern (an exact type, ``job.*`` or ``*``); ``since``/``until`` bound
    ``created_at`` (inclusive, exclusive)."""
    rows = await conn.fetch(
        """select * from events
            where organization_id = $1 and seq > $2 and ($3::text is null or entity_type = $3)
              and ($5::text is null or gpufleet_webhook_matches(array[$5::text], type))
              and ($6::uuid is null or entity_id = $6)
              and ($7::timestamptz is null or created_at >= $7)
              and ($8::timestamptz is null or created_at < $8)
            order by seq limit $4""",
        org_id,
        after_seq,
        entity_type,
        limit,
        type_pattern,
        entity_id,
        since,
        until,
    )
    return [_event(r) for r in rows]


async def last_seq(conn: Conn, *, org_id: UUID) -> int:
    return int(await conn.fetchval("select coalesce(max(seq), 0) from events where organization_id = $1", org_id))


async def delete_older_than(conn: Conn, *, days: int, limit: int) -> int:
    """Retention: up to ``limit`` of the oldest events past ``days``, every tenant (the system path)."""
    result = await conn.execute(
        """delete from events where id in (
               select id from events where created_at < now() - make_interval(days => $1)
                order by created_at limit $2)""",
        days,
        limit,
    )
    return int(result.split()[-1])


async def delete_finished_deliveries_older_than(conn: Conn, *, days: int, limit: int) -> int:
    """Retention of webhook history: finished deliveries (and their attempts) past ``days``."""
    result = await conn.execute(
        """delete from webhook_deliveries where id in (
               select id from webhook_deliveries
                where status in ('succeeded', 'dead') and created_at < now() - make_interval(days => $1)
                limit $2)""",
        days,
        limit,
    )
    return int(result.split()[-1])


async def of_types_after(conn: Conn, *, after_seq: int, types: Sequence[str], limit: int = 500) -> list[Event]:
    """Every tenant's events of ``types`` after ``after_seq`` (the system path): operator notifications."""
    rows = await conn.fetch(
        "select * from events where seq > $1 and type = any($2::text[]) order by seq limit $3",
        after_seq,
        list(types),
        limit,
    )
    return [_event(r) for r in rows]


async def max_seq(conn: Conn) -> int:
    return int(await conn.fetchval("select coalesce(max(seq), 0) from events"))
