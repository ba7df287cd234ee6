"""The events outbox's rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Event:
    id: UUID
    seq: int
    organization_id: UUID
    entity_type: str
    entity_id: UUID
    type: str
    data: dict[str, Any]
    actor: str | None
    created_at: datetime
