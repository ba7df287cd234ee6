"""Prediction events, agent -> server: ordered, batched, and at once when a prediction ends.

Every worker message becomes an event (logs, one streamed output item, done) in one FIFO for the
whole host, so a prediction's events arrive in order. One sender posts them to
``POST /v1/agent/predictions/events``: a ``done`` goes out immediately (with whatever is queued
before it); logs and output items wait at most ``flush_s`` (50 ms) to travel together. A batch the
server could not take (unreachable, 5xx) is sent again, first; one it refuses (4xx) is dropped with
an error in the log. Batches stay under the agent body limit (``max_batch_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.backoff import RetryDelay

log = logging.getLogger("gpufleet.agent.runner")

MAX_BATCH_BYTES = 900 * 1024  # under the server's 1 MiB body limit
MAX_BATCH_EVENTS = 1000
MAX_TEXT = 256 * 1024  # characters of log text per event: a long burst travels as several
MAX_ERROR = 10_000  # characters of a prediction's error (its end: where the reason usually is)


@dataclass(eq=False)
class Pending:
    body: bytes  # the event, serialized
    done: bool
    prediction_id: str
    sent: Callable[[bool, str | None], None] | None = None  # (accepted, reason) once the server answered
    replica_id: str = ""
    fallback: bool = False  # a done standing in for one the server refused
    queued_at: float = field(default_factory=time.monotonic)


class EventSender:
    def __init__(
        self,
        api: AgentApi,
        credential: str,
        *,
        backoff: RetryDelay,
        flush_s: float = 0.05,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.api, self.credential, self.backoff = api, credential, backoff
        self.flush_s, self.max_batch_bytes = flush_s, max_batch_bytes
        self.queue: deque[Pending] = deque()
        self._wake = asyncio.Event()  # something is queued
        self._urgent = asyncio.Event()  # a done is queued: send now
        self._idle = asyncio.Event()  # nothing queued nor in flight
        self._idle.set()
        self.sent_batches = 0

    def add(
        self,
        prediction_id: str,
        replica_id: str,
        kind: str,
        sent: Callable[[bool, str | None], None] | None = None,
        **fields: Any,
    ) -> None:
        if kind == "logs":
            text = str(fields.get("text") or "")
            for at in range(0, len(text), MAX_TEXT):
                self._push(prediction_id, replica_id, kind, None, {"text": text[at : at + MAX_TEXT]})
            return
        if isinstance(fields.get("error"), str):
            fields["error"] = fields["error"][-MAX_ERROR:]
        self._push(prediction_id, replica_id, kind, sent, fields)

    def _push(
        self,
        prediction_id: str,
        replica_id: str,
        kind: str,
        sent: Callable[[bool, str | None], None] | None,
        fields: dict[str, Any],
        *,
        fallback: bool = False,
    ) -> None:
        event = {"prediction_id": prediction_id, "replica_id": replica_id, "type": kind}
        event.update((k, v) for k, v in fields.items() if v is not None)
        try:
            body = json.dumps(event, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:  # not JSON (a worker bug): the prediction fails, saying so
            if kind != "done":
                log.warning("prediction %s: an event that is not JSON was dropped (%s)", prediction_id, exc)
                return
            reason = {"status": "failed", "error": f"the prediction's result is not JSON: {exc}"}
            body = json.dumps({**{k: event[k] for k in ("prediction_id", "replica_id", "type")}, **reason}).encode()
        self.queue.append(Pending(body, kind == "done", prediction_id, sent, replica_id, fallback))
        self._idle.clear()
        self._wake.set()
        if kind == "done":
            self._urgent.set()

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until everything queued so far has been answered (or ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                oldest = self.queue[0].queued_at if self.queue else time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), max(0.0, oldest + self.flush_s - time.monotonic()))
            batch = self._take()
            if not batch:
                self._settle()
                continue
            try:
                await self._post(batch)
                failures = 0
            except ServerUnreachable as exc:
                failures += 1
                self.queue.extendleft(reversed(batch))
                delay = self.backoff(failures, exc.retry_after)
                log.warning("prediction events failed (%s); %d kept, retrying in %.1f s", exc, len(self.queue), delay)
                await asyncio.sleep(delay)
            self._settle()

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        size = 16
        while self.queue and len(batch) < MAX_BATCH_EVENTS:
            item = self.queue[0]
            if batch and size + len(item.body) + 1 > self.max_batch_bytes:
                break
            batch.append(self.queue.popleft())
            size += len(item.body) + 1
        return batch

    def _settle(self) -> None:
        if not self.queue:
            self._wake.clear()
            self._urgent.clear()
            self._idle.set()
        elif not any(p.done for p in self.queue):
            self._urgent.clear()

    async def _post(self, batch: list[Pending]) -> None:
        body = b'{"events":[' + b",".join(p.body for p in batch) + b"]}"
        try:
            reply = await self.api.prediction_events(self.credential, body)
        except Refused as exc:
            if exc.status == 413 and len(batch) > 1:
                half = len(batch) // 2
                self.queue.extendleft(reversed(batch[half:]))
                await self._post(batch[:half])
                return
            log.error("the server refused %d prediction events (%s); they were dropped", len(batch), exc)
            for p in batch:
                if p.done and not p.fallback:  # the prediction must still end: without its result
                    error = {"status": "failed", "error": f"the server refused the prediction's result: {exc.detail}"}
                    self._push(p.prediction_id, p.replica_id, "done", p.sent, error, fallback=True)
                else:
                    _notify(p, False, str(exc))
            return
        self.sent_batches += 1
        answers = [(r.ok, r.reason) for r in reply.results]
        if len(answers) != len(batch):  # not one per event: judge each by its prediction's answers
            refused = {r.prediction_id: r.reason for r in reply.results if not r.ok}
            answers = [(p.prediction_id not in refused, refused.get(p.prediction_id)) for p in batch]
        for p, (ok, reason) in zip(batch, answers, strict=True):
            if not ok:
                log.info("prediction %s: the server did not take an event (%s)", p.prediction_id, reason)
            _notify(p, ok, reason)


def _notify(p: Pending, ok: bool, reason: str | None) -> None:
    if p.sent is not None:
        try:
            p.sent(ok, reason)
        except Exception:
            log.exception("prediction %s: handling the server's answer failed", p.prediction_id)
