"""Webhooks on the wire: endpoints, the secret shown once, deliveries and their attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from gpufleet.domain.webhooks import Attempt, Delivery, Webhook
from gpufleet.schemas.common import RequestModel, ResponseModel

DeliveryStatus = Literal["pending", "delivering", "failed", "succeeded", "dead"]


class WebhookCreate(RequestModel):
    url: str = Field(max_length=2048, description="http(s) URL of the receiver; must resolve to global addresses.")
    event_types: list[str] = Field(
        default_factory=list,
        description="Types or prefixes (`job.*`); empty or `*`: every event. See docs/events.md.",
    )
    description: str = Field(default="", max_length=500)
    enabled: bool = True


class WebhookUpdate(RequestModel):
    url: str | None = Field(default=None, max_length=2048)
    event_types: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="true re-enables a disabled webhook.")


class SecretRotate(RequestModel):
    overlap_s: float | None = Field(
        default=None, ge=0, le=7 * 86400, description="The old secret keeps signing this long (default 24 h)."
    )


class WebhookRead(ResponseModel):
    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="While in the future, deliveries carry a signature with the previous secret too."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, w: Webhook) -> WebhookRead:
        return cls.model_validate(w)


class WebhookCreated(WebhookRead):
    secret: str = Field(description="`whsec_...`: shown this once; verify deliveries with it.")


class AttemptRead(ResponseModel):
    attempt: int
    url: str
    address: str | None = Field(description="The validated address gpufleet connected to.")
    status_code: int | None
    response_headers: dict[str, str]
    response_body: str = Field(description="The first 4 KiB of the receiver's answer.")
    error: str | None
    latency_ms: int
    succeeded: bool
    created_at: datetime


class DeliveryRead(ResponseModel):
    id: UUID
    webhook_id: UUID
    message_id: str = Field(description="The `webhook-id` header: the same on every retry and redelivery.")
    event_id: UUID | None
    event_seq: int | None
    event_type: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts_made: int
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending and failed only).")
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[AttemptRead] = Field(default_factory=list)

    @classmethod
    def of(cls, d: Delivery, attempts: list[Attempt] | None = None) -> DeliveryRead:
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            message_id=f"msg_{d.id}",
            event_id=d.event_id,
            event_seq=d.event_seq,
            event_type=d.event_type,
            payload=d.payload,
            status=d.status,
            attempts_made=d.attempt,
            next_attempt_at=d.next_attempt_at if d.status in ("pending", "failed") else None,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
            attempts=[AttemptRead.model_validate(a) for a in attempts or []],
        )
