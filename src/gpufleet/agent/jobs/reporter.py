"""The agent's job reports (starts, log uploads, exits), sent together: one POST /v1/agent/reports.

Each run's supervisor hands its report to the host's one ``Reporter`` and awaits that report's own
answer. A report is sent at once when no request is in flight; while one is, the next reports
collect and leave together as soon as it returns: no added latency when idle, and under load
one request (and one server transaction) carries the reports of many runs.

Reports are idempotent, so a batch whose reply was lost (network trouble, 5xx, 429) is sent again,
its items ahead of newer ones: a run's reports reach the server in the order it made them (its
start before its exit, its logs before its exit). A server without the batch route (404/405: an
older one, during an upgrade) is sent one request per report from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gpufleet.agent.jobs.run import wait_or_stop
from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.schemas.execution import (
    MAX_BATCH_REPORTS,
    MAX_BATCH_UPLOADS,
    ExitIn,
    ExitItemIn,
    LogsIn,
    LogsItemIn,
    LogsResultOut,
    ReportResultOut,
    ReportsIn,
    StartedIn,
    StartedItemIn,
)

log = logging.getLogger("gpufleet.agent.jobs.reporter")

Kind = Literal["started", "exits", "logs"]
Item = StartedItemIn | ExitItemIn | LogsItemIn
Answer = ReportResultOut | LogsResultOut


@dataclass(eq=False)
class _Pending:
    kind: Kind
    item: Item
    size: int  # log bytes (base64) it carries
    answer: asyncio.Future[Answer | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Reporter:
    def __init__(
        self,
        api: AgentApi,
        credential: str,
        *,
        backoff: Callable[[int, float | None], float],
        halt: asyncio.Event,
        max_log_bytes: int = 1024 * 1024,
    ) -> None:
        self.api = api
        self.credential = credential
        self.backoff = backoff
        self.halt = halt
        self.max_log_bytes = max_log_bytes  # base64 bytes of log data per request (under the body limit)
        self.batched = True  # False once the server says it has no batch route
        self.requests = 0  # sent, for tests and logs: how many reports shared a request shows here
        self._queue: list[_Pending] = []
        self._inflight: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send(self, item: Item) -> Answer | None:
        """The item's answer once the server gave one; ``None`` if the agent stopped first.
        Raises ``Refused`` when the server refused the whole request (e.g. 413: too large)."""
        kind: Kind = (
            "started" if isinstance(item, StartedItemIn) else "exits" if isinstance(item, ExitItemIn) else "logs"
        )
        size = sum(len(c.data_b64) for c in item.chunks) if isinstance(item, LogsItemIn) else 0
        pending = _Pending(kind, item, size)
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        try:
            return await pending.answer
        finally:
            if not pending.answer.done():  # the caller was cancelled: its report is not wanted now
                pending.answer.cancel()
                if pending in self._queue:
                    self._queue.remove(pending)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for pending in [*self._inflight, *self._queue]:
            if not pending.answer.done():
                pending.answer.set_result(None)
        self._queue.clear()

    async def _run(self) -> None:
        failures = 0
        while not self.halt.is_set():
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._inflight = self._take()
            try:
                await self._deliver(batch)
            except ServerUnreachable as exc:
                failures += 1
                self._queue[:0] = [p for p in batch if not p.answer.done()]  # ahead of newer ones: order kept
                delay = self.backoff(failures, exc.retry_after)
                log.warning("%d job reports failed (%s); retrying in %.1f s", len(batch), exc, delay)
                await wait_or_stop(self.halt, delay)
                continue
            except Exception as exc:  # a bug: answer its reports rather than leave their runs waiting forever
                log.exception("sending %d job reports failed", len(batch))
                for p in batch:
                    if not p.answer.done():
                        p.answer.set_exception(exc)
            failures = 0
        for pending in self._queue:
            if not pending.answer.done():
                pending.answer.set_result(None)

    def _take(self) -> list[_Pending]:
        """The oldest reports that fit in one request (counts per list, log bytes); the rest wait."""
        counts = {"started": 0, "exits": 0, "logs": 0}
        limits = {"started": MAX_BATCH_REPORTS, "exits": MAX_BATCH_REPORTS, "logs": MAX_BATCH_UPLOADS}
        log_bytes = 0
        taken: list[_Pending] = []
        rest: list[_Pending] = []
        for p in self._queue:
            if p.answer.done():
                continue
            too_big = bool(p.size and log_bytes) and log_bytes + p.size > self.max_log_bytes
            if counts[p.kind] >= limits[p.kind] or too_big:
                rest.append(p)
                continue
            counts[p.kind] += 1
            log_bytes += p.size
            taken.append(p)
        self._queue = rest
        return taken

    async def _deliver(self, batch: list[_Pending]) -> None:
        if self.batched:
            body = ReportsIn(
                started=[p.item for p in batch if isinstance(p.item, StartedItemIn)],
                exits=[p.item for p in batch if isinstance(p.item, ExitItemIn)],
                logs=[p.item for p in batch if isinstance(p.item, LogsItemIn)],
            )
            self.requests += 1
            try:
                reply = await self.api.reports(self.credential, body)
            except Refused as exc:
                if exc.status not in (404, 405):
                    for p in batch:
                        if not p.answer.done():
                            p.answer.set_exception(exc)
                    return
                log.warning("the server has no batch route for job reports; sending them one by one")
                self.batched = False
            else:
                answers: dict[Kind, list[Answer]] = {"started": [*reply.started], "exits": [*reply.exits]}
                answers["logs"] = [*reply.logs]
                for p in batch:
                    answer = answers[p.kind].pop(0)
                    if not p.answer.done():
                        p.answer.set_result(answer)
                return
        for p in batch:  # one by one (an older server): the single routes
            if p.answer.done():
                continue
            self.requests += 1
            try:
                p.answer.set_result(await self._single(p.item))
            except Refused as exc:
                p.answer.set_exception(exc)

    async def _single(self, item: Item) -> Answer:
        try:
            if isinstance(item, StartedItemIn):
                await self.api.started(self.credential, item.job_id, StartedIn(attempt=item.attempt, pid=item.pid))
            elif isinstance(item, ExitItemIn):
                await self.api.exited(
                    self.credential, item.job_id, ExitIn.model_validate(item.model_dump(exclude={"job_id"}))
                )
            else:
                ack = await self.api.logs(
                    self.credential, item.job_id, LogsIn(attempt=item.attempt, chunks=item.chunks)
                )
                return LogsResultOut(job_id=item.job_id, attempt=item.attempt, result="applied", ack=ack)
        except Refused as exc:
            if exc.status not in (409, 422):
                raise
            current = exc.problem.get("current_attempt")
            return (LogsResultOut if isinstance(item, LogsItemIn) else ReportResultOut)(
                job_id=item.job_id,
                attempt=item.attempt,
                result="stale" if exc.stale else "invalid",
                detail=exc.detail,
                current_attempt=current if isinstance(current, int) else None,
                field=exc.problem.get("field"),
            )
        return ReportResultOut(job_id=item.job_id, attempt=item.attempt, result="applied")
