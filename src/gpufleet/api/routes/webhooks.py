"""/v1/webhooks: endpoints, secret rotation, test pings, delivery history and redelivery (admins)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from gpufleet.api.deps import DB, DEFAULT_LIMIT, Cursor, Limit, Tenant, requires
from gpufleet.api.state import app_state
from gpufleet.pagination import created_key, decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.webhooks import (
    DeliveryRead,
    DeliveryStatus,
    SecretRotate,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from gpufleet.services import webhooks

router = APIRouter(prefix="/v1", tags=["webhooks"])
NOT_FOUND: dict[int, dict[str, Any]] = {404: {"description": "no such webhook (or delivery) in this organization"}}
REFUSED: dict[int, dict[str, Any]] = {422: {"description": "invalid, or refused by the SSRF guard (`rule` names why)"}}


@router.post("/webhooks", status_code=201, **requires("webhooks.manage", REFUSED))
async def create_webhook(body: WebhookCreate, ctx: Tenant, db: DB, request: Request) -> WebhookCreated:
    """Create a webhook; the answer holds its signing secret, shown this once."""
    w, secret = await webhooks.create(
        db,
        ctx,
        app_state(request).settings,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        enabled=body.enabled,
    )
    return WebhookCreated.model_validate({**WebhookRead.of(w).model_dump(), "secret": secret})


@router.get("/webhooks", **requires("webhooks.read"))
async def list_webhooks(ctx: Tenant, db: DB, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[WebhookRead]:
    rows = await webhooks.page(db, ctx, limit=limit, after=decode_cursor(cursor))
    return Page[WebhookRead].of(rows, limit, WebhookRead.of)


@router.get("/webhooks/{webhook_id}", **requires("webhooks.read", NOT_FOUND))
async def get_webhook(webhook_id: UUID, ctx: Tenant, db: DB) -> WebhookRead:
    return WebhookRead.of(await webhooks.get(db, ctx, webhook_id))


@router.patch("/webhooks/{webhook_id}", **requires("webhooks.manage", {**NOT_FOUND, **REFUSED}))
async def update_webhook(webhook_id: UUID, body: WebhookUpdate, ctx: Tenant, db: DB, request: Request) -> WebhookRead:
    """Change the URL, filters, description; `enabled: true` re-enables a disabled webhook."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return WebhookRead.of(await webhooks.update(db, ctx, app_state(request).settings, webhook_id, changes))


@router.delete("/webhooks/{webhook_id}", status_code=204, **requires("webhooks.manage", NOT_FOUND))
async def delete_webhook(webhook_id: UUID, ctx: Tenant, db: DB) -> Response:
    await webhooks.delete(db, ctx, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/rotate-secret", **requires("webhooks.manage", NOT_FOUND))
async def rotate_webhook_secret(
    webhook_id: UUID, ctx: Tenant, db: DB, request: Request, body: SecretRotate | None = None
) -> WebhookCreated:
    """A new secret (shown once). The old one keeps signing beside it for `overlap_s`."""
    w, secret = await webhooks.rotate_secret(
        db, ctx, app_state(request).settings, webhook_id, overlap_s=body.overlap_s if body else None
    )
    return WebhookCreated.model_validate({**WebhookRead.of(w).model_dump(), "secret": secret})


@router.post("/webhooks/{webhook_id}/test", status_code=202, **requires("webhooks.manage", NOT_FOUND))
async def test_webhook(webhook_id: UUID, ctx: Tenant, db: DB) -> DeliveryRead:
    """Send a `webhook.test` ping to this endpoint; follow it in the delivery history."""
    return DeliveryRead.of(await webhooks.ping(db, ctx, webhook_id))


@router.get("/webhooks/{webhook_id}/deliveries", **requires("webhooks.read", NOT_FOUND))
async def list_deliveries(
    webhook_id: UUID,
    ctx: Tenant,
    db: DB,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    status: Annotated[DeliveryStatus | None, Query()] = None,
) -> Page[DeliveryRead]:
    """Newest first, each with its attempts."""
    rows = await webhooks.delivery_page(db, ctx, webhook_id, limit=limit, after=decode_cursor(cursor), status=status)
    return Page[DeliveryRead].of(rows, limit, lambda r: DeliveryRead.of(*r), key=lambda r: created_key(r[0]))


@router.get("/webhooks/{webhook_id}/deliveries/{delivery_id}", **requires("webhooks.read", NOT_FOUND))
async def get_delivery(webhook_id: UUID, delivery_id: UUID, ctx: Tenant, db: DB) -> DeliveryRead:
    d, attempts = await webhooks.delivery(db, ctx, webhook_id, delivery_id)
    return DeliveryRead.of(d, attempts)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    **requires("webhooks.manage", {**NOT_FOUND, 409: {"description": "it is being sent right now"}}),
)
async def redeliver(webhook_id: UUID, delivery_id: UUID, ctx: Tenant, db: DB) -> DeliveryRead:
    """Send it again now, with the same `webhook-id` and a fresh retry schedule."""
    return DeliveryRead.of(await webhooks.redeliver(db, ctx, webhook_id, delivery_id))
