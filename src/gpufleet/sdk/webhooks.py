"""SDK methods: webhooks, their secrets, test pings, delivery history and redelivery (admins)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from gpufleet.limits import MAX_PAGE
from gpufleet.schemas.common import Page
from gpufleet.schemas.webhooks import DeliveryRead, WebhookCreated, WebhookRead
from gpufleet.sdk.base import BaseClient, present


class WebhooksMixin(BaseClient):
    def create_webhook(
        self, url: str, event_types: list[str] | None = None, *, description: str = "", enabled: bool = True
    ) -> WebhookCreated:
        """The new webhook; ``.secret`` (``whsec_...``) is shown this once."""
        body = {"url": url, "event_types": event_types or [], "description": description, "enabled": enabled}
        return self._one(WebhookCreated, "POST", "/v1/webhooks", json=body)

    def list_webhooks(self) -> list[WebhookRead]:
        return list(self._all(WebhookRead, "/v1/webhooks"))

    def get_webhook(self, webhook_id: UUID) -> WebhookRead:
        return self._one(WebhookRead, "GET", f"/v1/webhooks/{webhook_id}")

    def update_webhook(self, webhook_id: UUID, **changes: Any) -> WebhookRead:
        """``url``, ``event_types``, ``description``, ``enabled`` (true re-enables a disabled one)."""
        body = present(changes)
        return self._one(WebhookRead, "PATCH", f"/v1/webhooks/{webhook_id}", json=body)

    def delete_webhook(self, webhook_id: UUID) -> None:
        self.request("DELETE", f"/v1/webhooks/{webhook_id}")

    def rotate_webhook_secret(self, webhook_id: UUID, *, overlap_s: float | None = None) -> WebhookCreated:
        """A new secret (shown once); the old one keeps signing for ``overlap_s`` (default 24 h)."""
        body = {"overlap_s": overlap_s} if overlap_s is not None else {}
        return self._one(WebhookCreated, "POST", f"/v1/webhooks/{webhook_id}/rotate-secret", json=body)

    def test_webhook(self, webhook_id: UUID) -> DeliveryRead:
        return self._one(DeliveryRead, "POST", f"/v1/webhooks/{webhook_id}/test")

    def webhook_deliveries(
        self, webhook_id: UUID, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[DeliveryRead]:
        raw = self.request(
            "GET", f"/v1/webhooks/{webhook_id}/deliveries", params={"status": status, "limit": limit, "cursor": cursor}
        )
        return Page[DeliveryRead].model_validate(raw)

    def iter_webhook_deliveries(self, webhook_id: UUID, *, status: str | None = None) -> Iterator[DeliveryRead]:
        cursor = None
        while True:
            page = self.webhook_deliveries(webhook_id, status=status, limit=MAX_PAGE, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_webhook_delivery(self, webhook_id: UUID, delivery_id: UUID) -> DeliveryRead:
        return self._one(DeliveryRead, "GET", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}")

    def redeliver(self, webhook_id: UUID, delivery_id: UUID) -> DeliveryRead:
        return self._one(DeliveryRead, "POST", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
