"""/v1/events: the organization's change feed, long-polled."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request

from gpufleet.api.deps import DB, Tenant, requires
from gpufleet.api.state import app_state, hub_of
from gpufleet.errors import InvalidInput
from gpufleet.event_types import PATTERN
from gpufleet.limits import MAX_FEED_PAGE
from gpufleet.schemas.common import Timestamp
from gpufleet.schemas.events import FeedEvent, FeedPage
from gpufleet.services import feed

router = APIRouter(prefix="/v1")

EntityType = Literal[
    "job", "host", "gpu", "prediction", "organization", "member", "invite", "api_key", "allocation", "webhook", "quota"
]


@router.get("/events", tags=["events"], **requires("events.read"))
async def list_events(
    ctx: Tenant,
    db: DB,
    request: Request,
    after_seq: Annotated[int, Query(ge=-1, le=2**62, description="-1: from now (returns only the position).")] = 0,
    after: Annotated[int | None, Query(ge=-1, le=2**62, description="The same cursor as `after_seq`.")] = None,
    wait_s: Annotated[float, Query(ge=0, le=30, description="Wait this long for a first new event.")] = 0,
    entity_type: EntityType | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_FEED_PAGE)] = 200,
    type: Annotated[
        str | None,
        Query(max_length=100, description="An event type or a prefix: `job.*` (or `job`), `host.unreachable`."),
    ] = None,
    entity_id: Annotated[UUID | None, Query(description="Only this object's events.")] = None,
    since: Annotated[Timestamp | None, Query(description="Created at or after (ISO 8601).")] = None,
    until: Annotated[Timestamp | None, Query(description="Created before (ISO 8601).")] = None,
) -> FeedPage:
    """Events after `after_seq`, oldest first; with `wait_s`, a long poll that answers as soon as one arrives.

    `after_seq` is the cursor: pass the page's `last_seq` to read on. Every type is documented
    in docs/events.md."""
    cap = app_state(request).settings.long_poll_max_s
    if after is not None:
        if after_seq not in (0, after):
            raise InvalidInput("after: give the cursor once, as `after` or as `after_seq`", field="after")
        after_seq = after
    pattern = None
    if type is not None:
        pattern = type if "." in type or type == "*" else f"{type}.*"
        if not PATTERN.match(pattern):
            raise InvalidInput("type: expected an event type or a prefix such as `job.*`", field="type")
    filters = {"type_pattern": pattern, "entity_id": entity_id, "since": since, "until": until}
    found, last = await feed.wait_for_events(
        db,
        ctx,
        after_seq=after_seq,
        wait_s=min(wait_s, cap),
        entity_type=entity_type,
        limit=limit,
        filters=filters,
        hub=hub_of(request),
    )
    return FeedPage(
        events=[FeedEvent.model_validate(e) for e in found],
        last_seq=last,
    )
