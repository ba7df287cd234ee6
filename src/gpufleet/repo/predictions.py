"""Predictions for users: create, read, list, cancel, wait marks; every SQL statement about them
that the API's requests run. The agent's side (claims and events) is in ``repo.prediction_queue``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.predictions import Prediction, PredictionStatus
from gpufleet.repo import keyset
from gpufleet.repo.rows import from_row, mapper, optional

SELECT = """select p.*, case when d.implicit then null else d.name end as deployment_name
              from predictions p left join deployments d on d.id = p.deployment_id"""


prediction = mapper(
    Prediction,
    status=PredictionStatus,
    webhook_events_filter=list,
    deployment=from_row(lambda r: r.get("deployment_name")),
    base_url=optional(),
)


async def insert(
    conn: Conn,
    *,
    org_id: UUID,
    model: str,
    version: str,
    version_id: UUID,
    deployment_id: UUID,
    input: dict[str, Any],
    webhook: str | None,
    webhook_events_filter: list[str],
    stream: bool,
    source: str,
    created_by: UUID | None,
    base_url: str | None = None,
) -> Prediction:
    row = await conn.fetchrow(
        """insert into predictions (organization_id, model, version, version_id, deployment_id, input, webhook,
                                    webhook_events_filter, stream, source, created_by, base_url)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning id""",
        org_id,
        model,
        version,
        version_id,
        deployment_id,
        input,
        webhook,
        webhook_events_filter,
        stream,
        source,
        created_by,
        base_url,
    )
    assert row is not None
    found = await get(conn, org_id=org_id, prediction_id=row["id"])
    assert found is not None
    return found


async def get(conn: Conn, *, org_id: UUID, prediction_id: UUID, lock: bool = False) -> Prediction | None:
    suffix = " for no key update of p" if lock else ""
    row = await conn.fetchrow(f"{SELECT} where p.organization_id = $1 and p.id = $2{suffix}", org_id, prediction_id)
    return prediction(row) if row else None


async def page(
    conn: Conn,
    *,
    org_id: UUID,
    limit: int,
    before: tuple[datetime, UUID] | None = None,
    after: tuple[datetime, UUID] | None = None,
    deployment_id: UUID | None = None,
) -> list[Prediction]:
    """Newest first: ``limit + 1`` predictions at most older than ``before`` (``keyset.page``);
    with ``after``, the ``limit + 1`` just newer than it (the previous page), still newest first."""
    newer = after is not None
    sql = f"{SELECT} where p.organization_id = $1 and ($2::uuid is null or p.deployment_id = $2)"
    key = ("p.created_at", "p.id")
    rows = await keyset.page(
        conn, sql, org_id, deployment_id, after=after if newer else before, limit=limit, key=key, ascending=newer
    )
    return [prediction(r) for r in (rows[::-1] if newer else rows)]


async def cancel_queued(conn: Conn, *, org_id: UUID, prediction_id: UUID) -> Prediction | None:
    """A prediction no replica has claimed: canceled at once (None when it was claimed meanwhile)."""
    row = await conn.fetchrow(
        """update predictions set status = 'canceled', completed_at = now(), cancel_requested = true
            where organization_id = $1 and id = $2 and status = 'starting' and replica_id is null returning id""",
        org_id,
        prediction_id,
    )
    return await get(conn, org_id=org_id, prediction_id=prediction_id) if row else None


async def request_cancel(conn: Conn, *, org_id: UUID, prediction_id: UUID) -> bool:
    """A processing prediction: its replica is told to stop it (through the claim reply)."""
    done = await conn.fetchval(
        """update predictions set cancel_requested = true
            where organization_id = $1 and id = $2 and status = 'processing' and not cancel_requested
        returning true""",
        org_id,
        prediction_id,
    )
    return bool(done)


async def fail_queued(
    conn: Conn, *, org_id: UUID, deployment_id: UUID, version_id: UUID, error: str
) -> list[Prediction]:
    """Queued predictions of one version of a deployment fail at once (no replica of it can start)."""
    rows = await conn.fetch(
        """update predictions set status = 'failed', error = $4, completed_at = now()
            where organization_id = $1 and deployment_id = $2 and version_id = $3
              and status = 'starting' and replica_id is null
        returning id""",
        org_id,
        deployment_id,
        version_id,
        error,
    )
    return await many(conn, org_id=org_id, ids=[r[0] for r in rows])


async def many(conn: Conn, *, org_id: UUID, ids: Sequence[UUID]) -> list[Prediction]:
    if not ids:
        return []
    rows = await conn.fetch(
        f"{SELECT} where p.organization_id = $1 and p.id = any($2::uuid[]) order by p.created_at, p.id",
        org_id,
        list(ids),
    )
    return [prediction(r) for r in rows]


async def queue_stats(conn: Conn, *, org_id: UUID, deployment_id: UUID) -> dict[UUID, tuple[int, float]]:
    """Per version: how many predictions wait for a replica, and the oldest one's age in seconds."""
    rows = await conn.fetch(
        """select version_id, count(*) as depth, extract(epoch from now() - min(created_at))::float8 as oldest
             from predictions
            where organization_id = $1 and deployment_id = $2 and status = 'starting' and replica_id is null
            group by version_id""",
        org_id,
        deployment_id,
    )
    return {r["version_id"]: (int(r["depth"]), float(r["oldest"])) for r in rows if r["version_id"] is not None}


async def since(conn: Conn, *, org_id: UUID, prediction_id: UUID, items: int, logs: int) -> asyncpg.Record | None:
    """For a stream: status, error, the streamed output items after the first ``items``, the logs
    after ``logs`` characters, and the final output once it ended."""
    return await conn.fetchrow(
        """select status, error, output_items, substr(logs, $4 + 1) as new_logs,
                  case when jsonb_typeof(output) = 'array' and output_items > $3
                       then (select jsonb_agg(e order by i)
                               from jsonb_array_elements(output) with ordinality as t(e, i)
                              where i > $3 and i <= output_items)
                  end as new_items,
                  case when status in ('succeeded', 'failed', 'canceled') then output end as output
             from predictions where organization_id = $1 and id = $2""",
        org_id,
        prediction_id,
        items,
        logs,
    )


async def follow_marks(conn: Conn, *, prediction_ids: Sequence[UUID]) -> dict[UUID, tuple[str, int, int]]:
    """System path: per prediction, what its followers wait for to change (status, items, logs length)."""
    rows = await conn.fetch(
        "select id, status, output_items, length(logs) from predictions where id = any($1::uuid[])",
        list(prediction_ids),
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}
