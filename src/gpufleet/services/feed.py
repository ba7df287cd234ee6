"""The change feed: an organization's events after a sequence number, long-polled.

Dashboards and scripts follow what happens (jobs queued, placed, running, finished; hosts
lost...) without polling every object: ask for events after the last ``seq`` seen and wait up
to ``wait_s`` for new ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gpufleet.backoff import Backoff
from gpufleet.db.pool import Database
from gpufleet.domain.events import Event
from gpufleet.domain.tenancy import TenantContext
from gpufleet.repo import events
from gpufleet.services.wakeups import WakeHub

_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 0.5


async def wait_for_events(
    db: Database,
    ctx: TenantContext,
    *,
    after_seq: int,
    wait_s: float,
    entity_type: str | None = None,
    limit: int = 200,
    filters: dict[str, Any] | None = None,
    hub: WakeHub | None = None,
) -> tuple[list[Event], int]:
    """Events after ``after_seq`` (waiting up to ``wait_s`` for the first), and the seq to ask after next.

    ``after_seq`` below zero means "from now": nothing is returned, only the current position.
    ``filters`` are ``repo.events.feed``'s (type pattern, entity id, time range).
    Waiting re-reads with a backoff capped at half a second, so a quiet feed costs two cheap index
    reads per second per follower. When the server stops (``hub.draining``) it answers with what it has.
    """
    org_id = ctx.org_id
    if after_seq < 0:
        async with db.transaction(org_id) as conn:
            return [], await events.last_seq(conn, org_id=org_id)
    deadline = time.monotonic() + max(0.0, wait_s)
    backoff = Backoff(_FIRST_DELAY_S, cap=_MAX_DELAY_S)
    while True:
        async with db.transaction(org_id) as conn:
            found = await events.feed(
                conn, org_id=org_id, after_seq=after_seq, entity_type=entity_type, limit=limit, **(filters or {})
            )
        left = deadline - time.monotonic()
        if found or left <= 0 or (hub is not None and hub.draining):
            return found, found[-1].seq if found else after_seq
        await asyncio.sleep(min(backoff.next(), left))
