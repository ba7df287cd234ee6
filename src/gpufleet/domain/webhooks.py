"""Webhook domain types: an endpoint, a delivery of one event to it, and one HTTP attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Webhook:
    id: UUID
    organization_id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: UUID
    organization_id: UUID
    webhook_id: UUID | None  # None: a prediction's own URL (``url``, ``prediction_id``)
    event_id: UUID | None
    event_seq: int | None
    event_type: str
    payload: dict[str, Any]
    status: str  # pending, delivering, failed (a retry is scheduled), succeeded, dead (gave up)
    attempt: int  # attempts made
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    url: str | None = None
    prediction_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    id: UUID
    delivery_id: UUID
    attempt: int
    url: str
    address: str | None
    status_code: int | None
    response_headers: dict[str, str]
    response_body: str
    error: str | None
    latency_ms: int
    succeeded: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery taken by a worker, with what it needs to send it."""

    delivery: Delivery
    url: str
    secrets: list[bytes]  # sealed: the current secret, then the previous one while it overlaps
    retry_from: int
