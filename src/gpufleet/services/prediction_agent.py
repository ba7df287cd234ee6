"""The agent's side of predictions: claiming queued predictions for its ready replicas (a long
poll on the hub's "predictions" channel), and applying what its workers report (logs, streamed
output, the end), each report on its own.

Fencing: a replica is offered with its job and attempt; one that is not that job's current
attempt on this host, or whose job is not running, gets nothing (the heartbeat's kill order stops
it). A report about a prediction that is not processing on that replica is refused on its own
(``ok: false``), never failing the batch. Replica rows are locked before prediction rows, the
order ``services.replica_end`` takes them in, so a replica cannot stop between a check and a claim.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import asyncpg

from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.predictions import (
    MAX_LOGS_CHARS,
    Claimed,
    ClaimResult,
    ClaimSlot,
    EventResult,
    PredictionEvent,
    ReplicaStatus,
)
from gpufleet.errors import InvalidInput
from gpufleet.repo import prediction_queue as queue
from gpufleet.repo import replicas as replicas_repo
from gpufleet.repo.replicas import ClaimView
from gpufleet.services.hosts import ensure_current
from gpufleet.services.prediction_events import predictions_moved, webhook
from gpufleet.services.wakeups import WakeHub

CLAIM_WAIT_MAX_S = 30.0
MAX_REPLICAS = 64
MAX_EVENTS = 1000
DONE_STATUSES = ("succeeded", "failed", "canceled")
MAX_ERROR = 10_000


def _current(view: ClaimView | None, slot: ClaimSlot, identity: HostIdentity) -> bool:
    return (
        view is not None
        and view.job_id == slot.job_id
        and view.attempt == slot.attempt
        and view.host_id == identity.host_id
        and view.job_status in ("allocated", "running")
    )


async def claim(
    db: Database,
    identity: HostIdentity,
    slots: Sequence[ClaimSlot],
    *,
    wait_s: float,
    hub: WakeHub | None,
    poll_s: float = 0.5,
    gone: Callable[[], Awaitable[bool]] | None = None,
    max_wait_s: float = CLAIM_WAIT_MAX_S,
) -> ClaimResult:
    """Predictions for the offered replicas, cancels and drains to act on; answered at once when
    any is non-empty, else when one arrives within ``wait_s`` (0..30) seconds.

    ``gone``: whether the agent hung up (it stopped, or gave up on this poll). A claim after that
    would hand predictions, cancels and drains to nobody, so the poll then ends with nothing."""
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s) or wait_s < 0:
        raise InvalidInput("wait_s must be a number of seconds >= 0", field="wait_s")
    if len(slots) > MAX_REPLICAS:
        raise InvalidInput(f"replicas: at most {MAX_REPLICAS} per claim", field="replicas")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(float(wait_s), CLAIM_WAIT_MAX_S, max_wait_s)  # the assignments' cap too
    if hub is None:
        while True:
            found = await _claim_once(db, identity, slots)
            left = deadline - loop.time()
            if not found.empty or left <= 0:
                return found
            await asyncio.sleep(min(poll_s, left))
            if gone is not None and await gone():
                return ClaimResult([], [], [])
    with hub.subscribe("predictions", identity.host_id) as sub:  # before the read: no lost wake-up
        while True:
            found = await _claim_once(db, identity, slots)
            left = deadline - loop.time()
            if not found.empty or left <= 0 or hub.draining:
                return found
            await sub.wait(left)
            if gone is not None and await gone():
                return ClaimResult([], [], [])


async def _claim_once(db: Database, identity: HostIdentity, slots: Sequence[ClaimSlot]) -> ClaimResult:
    org_id = identity.org_id
    async with db.transaction(org_id) as conn:
        await ensure_current(conn, identity)  # every read, so a long poll ends at a revocation
        views = await replicas_repo.claim_views(conn, org_id=org_id, replica_ids=[s.replica_id for s in slots])
        current = [(s, views[s.replica_id]) for s in slots if _current(views.get(s.replica_id), s, identity)]
        drain = sorted(v.replica_id for _, v in current if v.drain_due)
        claimed: list[Claimed] = []
        busy: list[UUID] = []
        for slot, view in current:
            if view.status is not ReplicaStatus.READY or slot.free_slots <= 0:
                continue
            got = await queue.claim(
                conn,
                org_id=org_id,
                deployment_id=view.deployment_id,
                version_id=view.version_id,
                replica_id=view.replica_id,
                limit=min(slot.free_slots, view.free),  # never more than its slots, whatever the agent says
                ready_at=view.ready_at,
                environment_s=view.environment_s,
                setup_s=view.setup_s,
            )
            if got:
                busy.append(view.replica_id)
                await predictions_moved(conn, got, actor=identity.actor)
            claimed += [Claimed(p.id, view.replica_id, p.input, p.stream, p.created_at) for p in got]
        await replicas_repo.touch(conn, org_id=org_id, replica_ids=busy)
        await replicas_repo.mark_drain_sent(conn, org_id=org_id, replica_ids=drain)
        cancel = await queue.cancels_due(conn, org_id=org_id, replica_ids=[v.replica_id for _, v in current])
    return ClaimResult(claimed, cancel, drain)


# ------------------------------------------------------------------------------ events


def _clean_text(value: str | None, limit: int) -> str | None:
    return None if value is None else value.replace("\x00", "")[:limit]


async def apply_events(db: Database, identity: HostIdentity, events: Sequence[PredictionEvent]) -> list[EventResult]:
    """Apply each event in order, each on its own (a savepoint): a stale one is ``ok: false`` with
    the reason and the rest still apply."""
    if len(events) > MAX_EVENTS:
        raise InvalidInput(f"events: at most {MAX_EVENTS} per batch", field="events")
    for i, e in enumerate(events):
        if e.type not in ("logs", "output", "done"):
            raise InvalidInput(f"events[{i}].type must be logs, output or done", field=f"events[{i}].type")
        if e.type == "done" and e.status not in DONE_STATUSES:
            raise InvalidInput(
                f"events[{i}].status must be one of {', '.join(DONE_STATUSES)}", field=f"events[{i}].status"
            )
        if e.predict_time is not None and (not math.isfinite(e.predict_time) or e.predict_time < 0):
            raise InvalidInput(f"events[{i}].predict_time must be >= 0", field=f"events[{i}].predict_time")
    org_id = identity.org_id
    actor = identity.actor
    results: list[EventResult] = []
    async with db.transaction(org_id) as conn:
        await ensure_current(conn, identity)
        views = await replicas_repo.claim_views(conn, org_id=org_id, replica_ids=[e.replica_id for e in events])
        mine = {
            rid
            for rid, v in views.items()
            if v.host_id == identity.host_id and v.job_status in ("allocated", "running")
        }
        finished: list[UUID] = []
        for e in events:
            if e.replica_id not in mine:
                results.append(EventResult(e.prediction_id, False, "the replica does not run on this host now"))
                continue
            try:
                async with conn.transaction():  # a savepoint: one bad event does not undo the others
                    reason = await _apply(conn, org_id, e, actor)
            except (asyncpg.DataError, asyncpg.UntranslatableCharacterError) as exc:
                reason = f"could not store it: {exc}"
            results.append(EventResult(e.prediction_id, reason is None, reason))
            if reason is None and e.type == "done":
                finished.append(e.replica_id)
        await replicas_repo.touch(conn, org_id=org_id, replica_ids=finished)
    return results


async def _apply(conn: Conn, org_id: UUID, e: PredictionEvent, actor: str) -> str | None:
    """None when applied, else why not."""
    p = await queue.lock_running(conn, org_id=org_id, prediction_id=e.prediction_id)
    if p is None:
        return "no such prediction"
    if p.replica_id != e.replica_id:
        return "the prediction does not run on this replica"
    if p.done:
        return f"the prediction already ended ({p.status.value})"
    if p.status.value != "processing":
        return f"the prediction is {p.status.value}"
    if e.type == "logs":
        if e.text:
            await queue.append_logs(
                conn,
                org_id=org_id,
                prediction_id=p.id,
                text=_clean_text(e.text, MAX_LOGS_CHARS) or "",
                cap=MAX_LOGS_CHARS,
            )
            await webhook(conn, p, "logs", throttle=True)
        return None
    if e.type == "output":
        await queue.append_output(conn, org_id=org_id, prediction_id=p.id, item=e.item)
        await webhook(conn, p, "output", throttle=True)
        return None
    error = _clean_text(e.error, MAX_ERROR)
    if e.status == "failed" and not error:
        error = "the prediction failed"
    moved = await queue.finish(
        conn,
        org_id=org_id,
        prediction_id=p.id,
        status=e.status or "failed",
        set_output=e.has_output,
        output=e.output,
        error=error if e.status == "failed" else None,
        predict_time=e.predict_time,
    )
    if moved is None:
        return "the prediction is not processing"
    await predictions_moved(conn, [moved], actor=actor)
    return None
