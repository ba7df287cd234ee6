"""The change feed on the wire."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from gpufleet.schemas.common import ResponseModel
from gpufleet.schemas.jobs import EventRead


class FeedEvent(EventRead):
    entity_type: str
    entity_id: UUID


class FeedPage(ResponseModel):
    events: list[FeedEvent]
    last_seq: int = Field(description="Pass as `after_seq` next time.")
