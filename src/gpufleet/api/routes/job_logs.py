"""/v1/jobs/{job_id}/logs: a job's output, as JSON pages or followed live as Server-Sent Events.

Each event of the stream is ``id: ATTEMPT:SEQ``, ``event: log``, ``data: LogEntryOut``; a
comment keeps quiet connections open; ``event: end`` closes it once the job is finished and
everything is sent. A client reconnecting with ``Last-Event-ID`` resumes after that chunk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from gpufleet.api.deps import DB, NOT_FOUND, Tenant, requires
from gpufleet.api.state import app_state, hub_of
from gpufleet.db.pool import Database
from gpufleet.domain.execution import LogEntry, LogPage
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import GpufleetError, InvalidInput
from gpufleet.limits import INT32_MAX
from gpufleet.schemas.common import vars_of
from gpufleet.schemas.execution import LogEntryOut, LogPageOut
from gpufleet.services import jobs, logs
from gpufleet.sse import comment, message

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["jobs"])

KEEPALIVE_S = 15.0
Attempt = Annotated[
    int | None, Query(ge=1, le=INT32_MAX, description="Which attempt (default: the job's current one).")
]
AfterSeq = Annotated[int, Query(ge=-1, le=INT32_MAX, description="Only chunks after this `seq` (-1: from the start).")]
LimitBytes = Annotated[int, Query(ge=1, le=logs.MAX_READ_BYTES, description="About this many bytes per page.")]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=64,
        description="The `id` of the last event received (`ATTEMPT:SEQ`): resume after it.",
    ),
]
STREAM_RESPONSES: dict[int, dict[str, Any]] = {
    **NOT_FOUND,
    200: {
        "description": "Server-Sent Events: `event: log` (data: LogEntryOut), `: keep-alive` comments, "
        'then `event: end` (data: `{"job_status": ...}`).',
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def entry_out(e: LogEntry) -> LogEntryOut:
    data_b64 = base64.b64encode(e.data).decode("ascii")
    return LogEntryOut.model_validate({**vars_of(e), "text": e.text, "data_b64": data_b64})


def page_out(p: LogPage) -> LogPageOut:
    return LogPageOut.model_validate({**vars_of(p), "chunks": [entry_out(c) for c in p.chunks]})


@router.get("/jobs/{job_id}/logs", **requires("jobs.read", NOT_FOUND))
async def read_job_logs(
    job_id: UUID,
    ctx: Tenant,
    db: DB,
    attempt: Attempt = None,
    after_seq: AfterSeq = -1,
    limit_bytes: LimitBytes = 1024 * 1024,
) -> LogPageOut:
    """One page of an attempt's output, oldest first. Pass `last_seq` back as `after_seq`;
    `complete` once the attempt is over and everything is read."""
    page = await logs.read_logs(db, ctx, job_id, attempt=attempt, after_seq=after_seq, limit_bytes=limit_bytes)
    return page_out(page)


@router.get(
    "/jobs/{job_id}/logs/stream",
    response_class=EventStreamResponse,
    **requires("jobs.read", STREAM_RESPONSES),
)
async def stream_job_logs(
    job_id: UUID,
    request: Request,
    ctx: Tenant,
    db: DB,
    attempt: Attempt = None,
    after_seq: AfterSeq = -1,
    last_event_id: LastEventId = None,
) -> EventStreamResponse:
    """Follow the output live (Server-Sent Events) until the job is finished. Without `attempt`
    it follows the job across retries (each chunk says its attempt)."""
    from_attempt, after = _resume(attempt, after_seq, last_event_id)
    # Refused before the stream starts: another organization's job, an attempt it never had. It
    # also fixes where following starts: the attempt current now, even if a retry starts meanwhile.
    first = await logs.read_logs(
        db, ctx, job_id, attempt=attempt or from_attempt, after_seq=after, limit_bytes=1, limit_chunks=1
    )
    entries = logs.follow_logs(
        db,
        ctx,
        job_id,
        attempt=attempt,
        after_seq=after,
        hub=hub_of(request),
        poll_s=app_state(request).settings.execution_poll_s,
        from_attempt=first.attempt,
    )
    return EventStreamResponse(
        _events(entries, db, ctx, job_id),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume(attempt: int | None, after_seq: int, last_event_id: str | None) -> tuple[int | None, int]:
    """(the attempt to start at, the seq to start after) from the query and ``Last-Event-ID``."""
    if last_event_id is None or not last_event_id.strip():
        return None, after_seq
    head, colon, tail = last_event_id.strip().partition(":")
    try:
        seq = int(tail if colon else head)
        at = int(head) if colon else None
    except ValueError:
        seq, at = -2, None
    if seq < -1 or seq > INT32_MAX or (at is not None and not 1 <= at <= INT32_MAX):
        raise InvalidInput("Last-Event-ID: not an id this stream sent (ATTEMPT:SEQ)", field="Last-Event-ID")
    if attempt is not None and at is not None and at != attempt:
        raise InvalidInput(f"Last-Event-ID: of attempt {at}, but attempt={attempt} was asked", field="Last-Event-ID")
    return at, seq


async def _events(
    entries: AsyncIterator[LogEntry], db: Database, ctx: TenantContext, job_id: UUID
) -> AsyncIterator[str]:
    yield message(retry="2000")  # sent at once, so the client knows the stream is open
    try:
        async for e in _with_keepalive(entries, KEEPALIVE_S):
            if e is None:
                yield comment("keep-alive")
            else:
                yield message(id=f"{e.attempt}:{e.seq}", event="log", data=_one_line(entry_out(e).model_dump_json()))
        job = await jobs.get(db, ctx, job_id)
    except GpufleetError as exc:  # e.g. the job was deleted meanwhile: a reconnect gets the 404
        log.info("log stream of job %s ended: %s", job_id, exc)
        return
    yield message(event="end", data=json.dumps({"job_status": job.status.value}))


def _one_line(data: str) -> str:
    """JSON leaves U+0085, U+2028 and U+2029 raw, and line readers that split like str.splitlines
    (httpx's, for one) would cut an event there; inside JSON strings they may be escaped."""
    return data.replace("\u0085", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


async def _with_keepalive(entries: AsyncIterator[LogEntry], every_s: float) -> AsyncIterator[LogEntry | None]:
    """The entries, with a None whenever ``every_s`` passes without one."""
    pending: asyncio.Task[LogEntry | None] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(entries))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            entry, pending = pending.result(), None
            if entry is None:
                return
            yield entry
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, GpufleetError):
                await pending
        aclose = getattr(entries, "aclose", None)
        if aclose is not None:
            await aclose()


async def _next(entries: AsyncIterator[LogEntry]) -> LogEntry | None:
    try:
        return await anext(entries)
    except StopAsyncIteration:
        return None
