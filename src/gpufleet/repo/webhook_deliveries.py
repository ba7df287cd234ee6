"""Webhook deliveries and their attempts: history for the API, claims and results for the worker.

Deliveries are created by the ``events`` fan-out trigger (migration 0011) in the transaction that
records the event; here they are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease judged by
the database clock, and a lease that ends without a result (a replica killed mid-delivery) makes
the delivery due again, so every event is attempted at least once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.webhooks import Attempt, Claim, Delivery
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper, optional

CHANNEL = "gpufleet_webhooks"
STATUSES = ("pending", "delivering", "failed", "succeeded", "dead")


_delivery = mapper(Delivery, url=optional(), prediction_id=optional())
_deliveries = Table("webhook_deliveries", _delivery, insert="organization_id, webhook_id, event_type, payload")


_attempt = mapper(Attempt)


# -- history and control (tenant transactions) ------------------------------------------------


async def create(conn: Conn, *, org_id: UUID, webhook_id: UUID, event_type: str, payload: dict[str, Any]) -> Delivery:
    """A delivery that no event stands behind (a test ping); due at once."""
    delivery = await _deliveries.insert(conn, org_id, webhook_id, event_type, payload)
    await conn.execute("select pg_notify($1, '')", CHANNEL)
    return delivery


async def page(
    conn: Conn,
    *,
    org_id: UUID,
    webhook_id: UUID,
    limit: int,
    after: tuple[datetime, UUID] | None,
    status: str | None = None,
) -> list[Delivery]:
    """Newest first: ``limit + 1`` deliveries at most past ``after`` (``keyset.page``)."""
    sql = """select * from webhook_deliveries
              where organization_id = $1 and webhook_id = $2 and ($3::text is null or status = $3)"""
    return [_delivery(r) for r in await keyset.page(conn, sql, org_id, webhook_id, status, after=after, limit=limit)]


async def get(conn: Conn, *, org_id: UUID, webhook_id: UUID, delivery_id: UUID) -> Delivery | None:
    row = await conn.fetchrow(
        "select * from webhook_deliveries where organization_id = $1 and webhook_id = $2 and id = $3",
        org_id,
        webhook_id,
        delivery_id,
    )
    return _delivery(row) if row else None


async def attempts(conn: Conn, *, org_id: UUID, delivery_ids: Sequence[UUID]) -> dict[UUID, list[Attempt]]:
    rows = await conn.fetch(
        """select * from webhook_attempts where organization_id = $1 and delivery_id = any($2::uuid[])
            order by delivery_id, attempt, created_at""",
        org_id,
        list(delivery_ids),
    )
    out: dict[UUID, list[Attempt]] = {d: [] for d in delivery_ids}
    for r in rows:
        out[r["delivery_id"]].append(_attempt(r))
    return out


async def redeliver(conn: Conn, *, org_id: UUID, webhook_id: UUID, delivery_id: UUID) -> Delivery | None:
    """Due again at once with a fresh retry schedule (same ``webhook-id``); None while it is being sent."""
    row = await conn.fetchrow(
        """update webhook_deliveries
              set status = 'pending', next_attempt_at = now(), retry_from = attempt,
                  lease_owner = null, lease_expires_at = null
            where organization_id = $1 and webhook_id = $2 and id = $3 and status <> 'delivering'
        returning *""",
        org_id,
        webhook_id,
        delivery_id,
    )
    return _delivery(row) if row else None


# -- the worker (system path) ----------------------------------------------------------------


async def reclaim_expired(conn: Conn) -> int:
    """Deliveries whose worker vanished (lease over, no result): due again now."""
    result = await conn.execute(
        """update webhook_deliveries set status = 'failed', next_attempt_at = now(), lease_owner = null,
                  lease_expires_at = null, last_error = coalesce(last_error, 'the delivering server stopped')
            where status = 'delivering' and lease_expires_at < now()"""
    )
    return int(result.split()[-1])


async def claim(conn: Conn, *, owner: str, limit: int, per_webhook: int, lease_s: float) -> list[Claim]:
    """Take up to ``limit`` due deliveries of enabled endpoints (or of predictions' own URLs), at
    most ``per_webhook`` each, in event order; other workers skip them (SKIP LOCKED) until the
    lease ends. A prediction's deliveries go to its URL, signed with its organization's default secret."""
    rows = await conn.fetch(
        """with due as (
               select d.id, coalesce(d.webhook_id, d.prediction_id) as target, d.event_seq, d.created_at,
                      d.next_attempt_at
                 from webhook_deliveries d
                 left join webhooks w on w.id = d.webhook_id
                where d.status in ('pending', 'failed') and d.next_attempt_at <= now()
                  and (w.is_active or (d.webhook_id is null and d.url is not null))
                order by d.next_attempt_at, d.event_seq nulls last
                limit $1 * 4
                  for update of d skip locked),
           ranked as (
               select id, next_attempt_at, event_seq,
                      row_number() over (partition by target order by event_seq nulls last, created_at) as n
                 from due),
           chosen as (
               select id from ranked where n <= $2 order by next_attempt_at, event_seq nulls last limit $1)
           update webhook_deliveries d
              set status = 'delivering', lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4)
             from chosen c
            where d.id = c.id
        returning d.*,
                  coalesce((select w.url from webhooks w where w.id = d.webhook_id), d.url) as target_url,
                  coalesce((select w.secret_ciphertext from webhooks w where w.id = d.webhook_id),
                           (select s.secret_ciphertext from webhook_default_secrets s
                             where s.organization_id = d.organization_id)) as secret_ciphertext,
                  (select case when w.previous_secret_expires_at > now() then w.previous_secret_ciphertext end
                     from webhooks w where w.id = d.webhook_id) as previous""",
        limit,
        per_webhook,
        owner,
        float(lease_s),
    )
    rows = sorted(rows, key=lambda r: (r["event_seq"] is None, r["event_seq"] or 0, r["created_at"]))
    return [
        Claim(
            delivery=_delivery(r),
            url=r["target_url"],
            secrets=[s for s in (r["secret_ciphertext"], r["previous"]) if s is not None],
            retry_from=r["retry_from"],
        )
        for r in rows
    ]


async def create_for_prediction(
    conn: Conn, *, org_id: UUID, prediction_id: UUID, url: str, event_type: str, payload: dict[str, Any]
) -> None:
    """A delivery of a prediction to its own ``webhook`` URL (no endpoint behind it); due at once."""
    await conn.execute(
        # clock_timestamp(): two made in one transaction (logs, then completed) keep their order.
        """insert into webhook_deliveries (organization_id, url, prediction_id, event_type, payload, created_at)
           values ($1, $2, $3, $4, $5, clock_timestamp())""",
        org_id,
        url,
        prediction_id,
        event_type,
        payload,
    )
    await conn.execute("select pg_notify($1, '')", CHANNEL)


@dataclass(frozen=True, slots=True)
class Result:
    """One attempt's result as the worker records it."""

    claim: Claim
    status: str  # succeeded, failed (retry after delay_s), dead
    delay_s: float | None
    url: str
    address: str | None
    status_code: int | None
    headers: dict[str, str]
    body: str
    error: str | None
    latency_ms: int
    succeeded: bool


async def record(conn: Conn, *, owner: str, results: Sequence[Result]) -> int:
    """Store every attempt, and move each delivery on (only while this worker still holds it)."""
    if not results:
        return 0
    await conn.execute(
        """insert into webhook_attempts (organization_id, delivery_id, webhook_id, attempt, url, address, status_code,
                                         response_headers, response_body, error, latency_ms, succeeded)
           select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::int[],
                                $8::jsonb[], $9::text[], $10::text[], $11::int[], $12::bool[])""",
        [r.claim.delivery.organization_id for r in results],
        [r.claim.delivery.id for r in results],
        [r.claim.delivery.webhook_id for r in results],
        [r.claim.delivery.attempt + 1 for r in results],
        [r.url for r in results],
        [r.address for r in results],
        [r.status_code for r in results],
        [r.headers for r in results],
        [r.body for r in results],
        [r.error for r in results],
        [r.latency_ms for r in results],
        [r.succeeded for r in results],
    )
    status = await conn.execute(
        """update webhook_deliveries d
              set status = u.status, attempt = d.attempt + 1, last_status_code = u.code, last_error = u.error,
                  next_attempt_at = case when u.delay is null then d.next_attempt_at
                                         else now() + make_interval(secs => u.delay) end,
                  delivered_at = case when u.status = 'succeeded' then now() else d.delivered_at end,
                  lease_owner = null, lease_expires_at = null
             from unnest($1::uuid[], $2::text[], $3::float8[], $4::int[], $5::text[])
                  as u(id, status, delay, code, error)
            where d.id = u.id and d.status = 'delivering' and d.lease_owner = $6""",
        [r.claim.delivery.id for r in results],
        [r.status for r in results],
        [r.delay_s for r in results],
        [r.status_code for r in results],
        [r.error for r in results],
        owner,
    )
    return int(status.split()[-1])


async def release(conn: Conn, *, owner: str, delivery_ids: Sequence[UUID], delay_s: float) -> None:
    """Hand claimed deliveries back unattempted (their endpoint just failed in this round)."""
    if delivery_ids:
        await conn.execute(
            """update webhook_deliveries
                  set status = case when attempt = 0 then 'pending' else 'failed' end,
                      next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => $3)),
                      lease_owner = null, lease_expires_at = null
                where id = any($1::uuid[]) and status = 'delivering' and lease_owner = $2""",
            list(delivery_ids),
            owner,
            float(delay_s),
        )


async def count_by_status(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("select status, count(*) as n from webhook_deliveries group by status")
    return {r["status"]: int(r["n"]) for r in rows}
