"""The prediction queue seen from the agents: claims (``FOR UPDATE SKIP LOCKED``, oldest first), cancels
to deliver, and what a running prediction reports (logs, streamed output, its end); every statement
guarded by the prediction's replica and status, so a late or stale report changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.predictions import Prediction
from gpufleet.repo.predictions import prediction
from gpufleet.repo.replicas import RESEND_S
from gpufleet.repo.rows import Table

_predictions = Table("predictions", prediction)


async def claim(
    conn: Conn,
    *,
    org_id: UUID,
    deployment_id: UUID,
    version_id: UUID,
    replica_id: UUID,
    limit: int,
    ready_at: datetime | None,
    environment_s: float | None,
    setup_s: float | None,
) -> list[Prediction]:
    """Up to ``limit`` queued predictions of this deployment and version, oldest first, now
    ``processing`` on the replica. Rows another claim holds are skipped, never waited for.

    A prediction created before the replica was ready waited for it: a cold start, whose metrics
    carry the replica's environment and setup times."""
    if limit <= 0:
        return []
    rows = await conn.fetch(
        """with picked as (
               select id from predictions
                where organization_id = $1 and deployment_id = $2 and version_id = $3
                  and status = 'starting' and replica_id is null
                order by created_at, id
                limit $4
                  for no key update skip locked)
           update predictions p
              set replica_id = $5, claimed_at = now(), started_at = now(), status = 'processing',
                  metrics = p.metrics
                      || jsonb_build_object('queue_time', extract(epoch from now() - p.created_at)::float8)
                      || case when $6::timestamptz is not null and $6::timestamptz > p.created_at
                              then jsonb_strip_nulls(jsonb_build_object(
                                       'cold_start', true, 'environment_time', $7::float8, 'setup_time', $8::float8))
                              else jsonb_build_object('cold_start', false) end
             from picked where p.id = picked.id
        returning p.*""",
        org_id,
        deployment_id,
        version_id,
        limit,
        replica_id,
        ready_at,
        environment_s,
        setup_s,
    )
    return sorted((prediction(r) for r in rows), key=lambda p: (p.created_at, p.id))


async def cancels_due(conn: Conn, *, org_id: UUID, replica_ids: Sequence[UUID]) -> list[UUID]:
    """Predictions on these replicas whose cancel the agent was not told of in the last RESEND_S; marked told."""
    if not replica_ids:
        return []
    rows = await conn.fetch(
        """update predictions set cancel_sent_at = now()
            where organization_id = $1 and replica_id = any($2::uuid[]) and status = 'processing'
              and cancel_requested
              and (cancel_sent_at is null or cancel_sent_at < now() - make_interval(secs => $3))
        returning id""",
        org_id,
        list(replica_ids),
        RESEND_S,
    )
    return sorted(r[0] for r in rows)


async def lock_running(conn: Conn, *, org_id: UUID, prediction_id: UUID) -> Prediction | None:
    return await _predictions.get(conn, org_id, prediction_id, lock="no key update")


async def append_logs(conn: Conn, *, org_id: UUID, prediction_id: UUID, text: str, cap: int) -> None:
    """Logs grow up to ``cap`` characters; beyond it the rest is dropped with one note."""
    await conn.execute(
        """update predictions
              set logs = case when length(logs) >= $4 then logs
                              when length(logs) + length($3) <= $4 then logs || $3
                              else left(logs || $3, $4) || E'\\n[logs truncated]\\n' end
            where organization_id = $1 and id = $2""",
        org_id,
        prediction_id,
        text,
        cap,
    )


async def append_output(conn: Conn, *, org_id: UUID, prediction_id: UUID, item: Any) -> None:
    """One more item of a streamed (generator) output."""
    await conn.execute(
        """update predictions
              set output = coalesce(case when jsonb_typeof(output) = 'array' then output end, '[]'::jsonb)
                           || jsonb_build_array(coalesce($3::jsonb, 'null'::jsonb)),
                  output_items = output_items + 1
            where organization_id = $1 and id = $2""",
        org_id,
        prediction_id,
        item,
    )


async def finish(
    conn: Conn,
    *,
    org_id: UUID,
    prediction_id: UUID,
    status: str,
    set_output: bool,
    output: Any,
    error: str | None,
    predict_time: float | None,
) -> Prediction | None:
    """processing -> a terminal status, with its final output (when sent), error and times."""
    row = await conn.fetchrow(
        """update predictions
              set status = $3, completed_at = now(), error = $6,
                  output = case when $4 then $5::jsonb else output end,
                  metrics = metrics || jsonb_strip_nulls(jsonb_build_object(
                      'predict_time', $7::float8,
                      'total_time', extract(epoch from now() - created_at)::float8))
            where organization_id = $1 and id = $2 and status = 'processing'
        returning *""",
        org_id,
        prediction_id,
        status,
        set_output,
        output,
        error,
        predict_time,
    )
    return prediction(row) if row else None


async def fail_on_replica(conn: Conn, *, org_id: UUID, replica_id: UUID, error: str) -> list[Prediction]:
    """The replica is gone: what it was processing fails with ``error`` (canceled where a cancel was asked)."""
    rows = await conn.fetch(
        """update predictions
              set status = case when cancel_requested then 'canceled' else 'failed' end,
                  error = case when cancel_requested then null else $3 end,
                  completed_at = now(),
                  metrics = metrics || jsonb_build_object(
                      'total_time', extract(epoch from now() - created_at)::float8)
            where organization_id = $1 and replica_id = $2 and status = 'processing'
        returning *""",
        org_id,
        replica_id,
        error,
    )
    return sorted((prediction(r) for r in rows), key=lambda p: (p.created_at, p.id))
