"""Webhook use cases: endpoints (admins only), secrets shown once and rotated, pings, history.

Every change records an event in its transaction. URLs pass the SSRF guard when they are set
(and again at each delivery, in the worker).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import TenantContext
from gpufleet.domain.webhooks import Attempt, Delivery, Webhook
from gpufleet.errors import Conflict, InvalidInput
from gpufleet.event_types import check_pattern
from gpufleet.repo import events
from gpufleet.repo import webhook_deliveries as deliveries
from gpufleet.repo import webhooks as repo
from gpufleet.services.lookup import found
from gpufleet.webhooks import ssrf
from gpufleet.webhooks.signing import SecretBox, new_secret

MAX_PATTERNS = 64


def _box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key.get_secret_value())


def check_event_types(patterns: list[str]) -> list[str]:
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInput(f"event_types: at most {MAX_PATTERNS} patterns", field="event_types")
    for i, pattern in enumerate(patterns):
        why = check_pattern(pattern)
        if why is not None:
            raise InvalidInput(f"event_types[{i}]: {pattern!r} {why}", field=f"event_types[{i}]")
    return list(dict.fromkeys(patterns))


async def check_url(url: str, settings: Settings, resolver: ssrf.Resolver = ssrf.system_resolver) -> None:
    await ssrf.resolve(url, settings.webhook_networks, resolver)


async def _event(conn: Any, w: Webhook, type: str, data: dict[str, Any], ctx: TenantContext) -> None:
    await events.record(conn, ctx, "webhook", w.id, type, data)


async def create(
    db: Database,
    ctx: TenantContext,
    settings: Settings,
    *,
    url: str,
    event_types: list[str],
    description: str,
    enabled: bool,
) -> tuple[Webhook, str]:
    """The endpoint and its signing secret, which is shown this once."""
    org_id = ctx.org_id
    patterns = check_event_types(event_types)
    await check_url(url, settings)
    secret = new_secret()
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = await repo.create(
            conn,
            org_id=org_id,
            url=url,
            description=description,
            event_types=patterns,
            secret_ciphertext=_box(settings).seal(secret),
            enabled=enabled,
            created_by=ctx.user_id,
        )
        await _event(conn, w, "webhook.created", {"url": url, "event_types": patterns}, ctx)
    return w, secret


async def get(db: Database, ctx: TenantContext, webhook_id: UUID) -> Webhook:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = found(await repo.get(conn, org_id=org_id, webhook_id=webhook_id), f"webhook {webhook_id}")
    return w


async def page(db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None) -> list[Webhook]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await repo.page(conn, org_id=org_id, limit=limit, after=after)


async def update(
    db: Database, ctx: TenantContext, settings: Settings, webhook_id: UUID, changes: dict[str, Any]
) -> Webhook:
    org_id = ctx.org_id
    fields: dict[str, Any] = {}
    if "url" in changes:
        await check_url(changes["url"], settings)
        fields["url"] = changes["url"]
    if "event_types" in changes:
        fields["event_types"] = check_event_types(changes["event_types"])
    if "description" in changes:
        fields["description"] = changes["description"]
    if "enabled" in changes:
        fields["is_active"] = changes["enabled"]
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = found(await repo.update(conn, org_id=org_id, webhook_id=webhook_id, fields=fields), f"webhook {webhook_id}")
        await _event(conn, w, "webhook.updated", {"fields": sorted(changes)}, ctx)
    return w


async def delete(db: Database, ctx: TenantContext, webhook_id: UUID) -> None:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = found(await repo.delete(conn, org_id=org_id, webhook_id=webhook_id), f"webhook {webhook_id}")
        await _event(conn, w, "webhook.deleted", {"url": w.url}, ctx)


async def rotate_secret(
    db: Database, ctx: TenantContext, settings: Settings, webhook_id: UUID, *, overlap_s: float | None
) -> tuple[Webhook, str]:
    """A new secret (shown once); the old one keeps signing beside it for the overlap window."""
    org_id = ctx.org_id
    overlap = settings.webhook_rotation_overlap_s if overlap_s is None else overlap_s
    secret = new_secret()
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = found(
            await repo.rotate_secret(
                conn,
                org_id=org_id,
                webhook_id=webhook_id,
                secret_ciphertext=_box(settings).seal(secret),
                overlap_s=overlap,
            ),
            f"webhook {webhook_id}",
        )
        await _event(conn, w, "webhook.secret_rotated", {"overlap_s": int(overlap)}, ctx)
    return w, secret


async def ping(db: Database, ctx: TenantContext, webhook_id: UUID) -> Delivery:
    """A ``webhook.test`` delivery to this endpoint only, due at once."""
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        w = found(await repo.get(conn, org_id=org_id, webhook_id=webhook_id), f"webhook {webhook_id}")
        if not w.enabled:
            raise Conflict(f"webhook {webhook_id} is disabled; enable it first (PATCH enabled=true)")
        payload = {
            "type": "webhook.test",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": {
                "entity_type": "webhook",
                "entity_id": str(w.id),
                "actor": ctx.actor,
                "payload": {"message": "a test delivery from gpufleet"},
            },
        }
        return await deliveries.create(conn, org_id=org_id, webhook_id=w.id, event_type="webhook.test", payload=payload)


async def delivery_page(
    db: Database,
    ctx: TenantContext,
    webhook_id: UUID,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None,
    status: str | None,
) -> list[tuple[Delivery, list[Attempt]]]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        found(await repo.get(conn, org_id=org_id, webhook_id=webhook_id), f"webhook {webhook_id}")
        rows = await deliveries.page(
            conn, org_id=org_id, webhook_id=webhook_id, limit=limit, after=after, status=status
        )
        tries = await deliveries.attempts(conn, org_id=org_id, delivery_ids=[d.id for d in rows])
    return [(d, tries[d.id]) for d in rows]


async def delivery(
    db: Database, ctx: TenantContext, webhook_id: UUID, delivery_id: UUID
) -> tuple[Delivery, list[Attempt]]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        d = found(
            await deliveries.get(conn, org_id=org_id, webhook_id=webhook_id, delivery_id=delivery_id),
            f"delivery {delivery_id} of webhook {webhook_id}",
        )
        tries = await deliveries.attempts(conn, org_id=org_id, delivery_ids=[d.id])
    return d, tries[d.id]


async def redeliver(db: Database, ctx: TenantContext, webhook_id: UUID, delivery_id: UUID) -> Delivery:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        found(
            await deliveries.get(conn, org_id=org_id, webhook_id=webhook_id, delivery_id=delivery_id),
            f"delivery {delivery_id} of webhook {webhook_id}",
        )
        moved = await deliveries.redeliver(conn, org_id=org_id, webhook_id=webhook_id, delivery_id=delivery_id)
        if moved is None:
            raise Conflict(f"delivery {delivery_id} is being sent right now; try again when it has finished")
    return moved
