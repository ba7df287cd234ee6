"""The events table: every state change, written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain import Event


def _event(row: asyncpg.Record) -> Event:
    return Event(
        id=row["id"],
        seq=row["seq"],
        organization_id=row["organization_id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        type=row["type"],
        data=row["data"],
        actor=row["actor"],
        created_at=row["created_at"],
    )


async def append(
    conn: Conn,
    *,
    org_id: UUID,
    entity_type: str,
    entity_id: UUID,
    type: str,
    data: dict[str, Any] | None = None,
    actor: str | None = None,
) -> Event:
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


async def for_entity(
    conn: Conn, *, org_id: UUID, entity_type: str, entity_id: UUID, after_seq: int = 0, limit: int = 100
) -> list[Event]:
    rows = await conn.fetch(
        """select * from events
            where organization_id = $1 and entity_type = $2 and entity_id = $3 and seq > $4
            order by seq limit $5""",
        org_id,
        entity_type,
        entity_id,
        after_seq,
        limit,
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
    conn: Conn, *, org_id: UUID, after_seq: int, entity_type: str | None = None, limit: int = 200
) -> list[Event]:
    """An organization's events after ``after_seq``, oldest first: the change feed."""
    rows = await conn.fetch(
        """select * from events
            where organization_id = $1 and seq > $2 and ($3::text is null or entity_type = $3)
            order by seq limit $4""",
        org_id,
        after_seq,
        entity_type,
        limit,
    )
    return [_event(r) for r in rows]


async def last_seq(conn: Conn, *, org_id: UUID) -> int:
    return int(await conn.fetchval("select coalesce(max(seq), 0) from events where organization_id = $1", org_id))
