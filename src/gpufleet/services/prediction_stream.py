"""A prediction as server-sent events, as Replicate streams it: ``output`` (one per streamed item;
text as is, anything else as JSON), ``logs`` (one per line), ``error``, then ``done``.

Each event's ``id`` is ``<items sent>:<log characters sent>``: a client that reconnects with it
as ``Last-Event-ID`` resumes exactly there. The stream sleeps on the prediction's change
notification (the hub's "prediction" channel) and sends a comment line while idle, so proxies
keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import TenantContext
from gpufleet.repo import predictions as repo
from gpufleet.services.wakeups import WakeHub
from gpufleet.sse import comment, message

TERMINAL = ("succeeded", "failed", "canceled")
POLL_S = 0.5  # without a hub (a transaction pooler): how often to read again


def sse(event: str, data: str, ident: str) -> bytes:
    return message(event=event, id=ident, data=data).encode()


def item_text(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))


def parse_resume(last_event_id: str | None) -> tuple[int, int]:
    """``Last-Event-ID`` -> (items, log characters) already received; (0, 0) when absent or foreign."""
    if not last_event_id:
        return 0, 0
    items, _, logs = last_event_id.partition(":")
    if items.isdigit() and logs.isdigit():
        return int(items), int(logs)
    return 0, 0


async def events(
    db: Database,
    ctx: TenantContext,
    prediction_id: UUID,
    *,
    hub: WakeHub | None,
    resume: str | None = None,
    keepalive_s: float = 15.0,
) -> AsyncIterator[bytes]:
    items, logs = parse_resume(resume)
    org_id = ctx.org_id
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    with contextlib.ExitStack() as stack:
        sub = stack.enter_context(hub.subscribe("prediction", prediction_id)) if hub else None  # before reading
        while True:
            async with db.transaction(org_id) as conn:
                row = await repo.since(conn, org_id=org_id, prediction_id=prediction_id, items=items, logs=logs)
            if row is None:
                return
            done = row["status"] in TERMINAL
            text: str = row["new_logs"] or ""
            if not done:
                text = text[: text.rfind("\n") + 1]  # whole lines only, until the end
            for line in text.splitlines(keepends=True):
                logs += len(line)
                yield sse("logs", line.rstrip("\n"), f"{items}:{logs}")
                quiet_since = loop.time()
            for item in row["new_items"] or []:
                items += 1
                yield sse("output", item_text(item), f"{items}:{logs}")
                quiet_since = loop.time()
            if done:
                if row["output_items"] == 0 and items == 0 and row["output"] is not None:
                    items += 1
                    yield sse("output", item_text(row["output"]), f"{items}:{logs}")
                if row["status"] == "failed":
                    detail = json.dumps({"detail": row["error"] or "the prediction failed"})
                    yield sse("error", detail, f"{items}:{logs}")
                reason = {"succeeded": {}, "canceled": {"reason": "canceled"}}.get(row["status"], {"reason": "error"})
                yield sse("done", json.dumps(reason), f"{items}:{logs}")
                return
            if sub is None or hub is None:
                await asyncio.sleep(POLL_S)
            elif hub.draining:
                return  # the server is stopping: the client reconnects with Last-Event-ID
            else:
                await sub.wait(max(0.0, keepalive_s - (loop.time() - quiet_since)))
            if loop.time() - quiet_since >= keepalive_s:
                yield comment("keepalive").encode()
                quiet_since = loop.time()
