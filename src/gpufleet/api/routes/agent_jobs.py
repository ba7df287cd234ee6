"""/v1/agent/assignments and /v1/agent/jobs/*: the work an agent runs, with the host credential
(``Bearer gfh_...``) like the heartbeat. Every report quotes (job, attempt); one about an attempt
that is not the job's current one on this host is a 409 ``Stale Attempt`` and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request

from gpufleet.api.deps import DB
from gpufleet.api.routes.agent import AGENT_ERRORS, Host, execution_policy
from gpufleet.api.state import hub_of
from gpufleet.domain.execution import (
    ExitItem,
    ExitReport,
    LogChunkIn,
    LogsItem,
    ReconcileEntry,
    ReportBatch,
    StartedReport,
)
from gpufleet.errors import InvalidInput
from gpufleet.schemas.execution import (
    AssignmentOut,
    AssignmentsPoll,
    AssignmentsResponse,
    ExitIn,
    KillOrder,
    LogChunkWire,
    LogsAck,
    LogsIn,
    ReconcileIn,
    ReconcileOut,
    ReportsIn,
    ReportsOut,
    StartedIn,
)
from gpufleet.services import assignments, logs, report_batch, reports

router = APIRouter(prefix="/v1/agent", tags=["agent"])

ASSIGNMENT_WAIT_MAX_S = 30.0
STALE: dict[int | str, dict[str, Any]] = {
    **AGENT_ERRORS,
    409: {
        "description": "Stale Attempt: not the job's current attempt on this host (or its exit was already "
        "reported otherwise); stop it and report nothing more. The body has `job_id`, `attempt`, `current_attempt`."
    },
}


@router.get("/assignments", responses=AGENT_ERRORS)
async def get_assignments(
    host: Host,
    request: Request,
    db: DB,
    wait_s: Annotated[
        float,
        Query(ge=0, le=ASSIGNMENT_WAIT_MAX_S, allow_inf_nan=False, description="Long-poll up to this many seconds."),
    ] = 0.0,
) -> AssignmentsResponse:
    """The jobs placed on this host and not yet reported started; if none, the first to arrive
    within ``wait_s`` (else an empty list). Delivered again on every poll until started: skip a
    (job, attempt) already running."""
    hub = hub_of(request)
    found = await assignments.next_assignments(db, host, wait_s=wait_s, hub=hub, policy=execution_policy(request))
    return AssignmentsResponse(assignments=[AssignmentOut.model_validate(a) for a in found])


@router.post("/assignments", responses=AGENT_ERRORS)
async def poll_assignments(body: AssignmentsPoll, host: Host, request: Request, db: DB) -> AssignmentsResponse:
    """As GET, and ``kill`` lists which of the ``running`` runs to stop now: a cancel requested, or a
    run fenced (requeued, moved off this host) ends the wait at once instead of waiting for the
    next heartbeat. Instructions as in the heartbeat's ``instructions.kill`` (which stays the
    fallback, and alone carries ``timed_out``)."""
    hub = hub_of(request)
    running = [(r.job_id, r.attempt) for r in body.running]
    work = await assignments.next_work(
        db, host, wait_s=body.wait_s, running=running, hub=hub, policy=execution_policy(request)
    )
    return AssignmentsResponse(
        assignments=[AssignmentOut.model_validate(a) for a in work.assignments],
        kill=[KillOrder.model_validate(k) for k in work.kill],
    )


@router.post("/jobs/{job_id}/started", status_code=204, responses=STALE)
async def job_started(job_id: UUID, body: StartedIn, host: Host, db: DB) -> None:
    """The attempt's process started: allocated -> running (idempotent)."""
    await reports.report_started(db, host, job_id, body.attempt, pid=body.pid)


@router.post("/jobs/{job_id}/exit", status_code=204, responses=STALE)
async def job_exit(job_id: UUID, body: ExitIn, host: Host, request: Request, db: DB) -> None:
    """The attempt ended. Upload its remaining logs first. Resending the same report is safe."""
    outcome = ExitReport(body.status, body.exit_code, body.signal, body.reason)
    await reports.report_exit(db, host, job_id, body.attempt, outcome, policy=execution_policy(request))


@router.post("/jobs/{job_id}/logs", responses={**STALE, 413: {"description": "body over the log upload limit"}})
async def job_logs(job_id: UUID, body: LogsIn, host: Host, request: Request, db: DB) -> LogsAck:
    """An ordered batch of the attempt's output (bytes base64 in ``data_b64``); idempotent by
    (stream, offset). ``acked_seq``: the agent may forget chunks up to it."""
    chunks = [_chunk(i, c) for i, c in enumerate(body.chunks)]
    result = await logs.append_logs(db, host, job_id, body.attempt, chunks, policy=execution_policy(request))
    return LogsAck.model_validate(result)


def _chunk(i: int, c: LogChunkWire) -> LogChunkIn:
    try:
        data = base64.b64decode(c.data_b64, validate=True)
    except (binascii.Error, ValueError):
        where = f"chunks[{i}].data_b64"
        raise InvalidInput(f"{where}: not valid base64 (standard alphabet, padded)", field=where) from None
    return LogChunkIn(c.seq, c.stream, c.offset, data, c.dropped_bytes)


@router.post("/reports", responses=AGENT_ERRORS)
async def job_reports(body: ReportsIn, host: Host, request: Request, db: DB) -> ReportsOut:
    """Many starts, log uploads and exits at once, in one transaction: each item judged as its
    single route judges it and answered alone (``applied``, ``stale``, ``invalid``); a refused item
    changes nothing, the others apply. Applied in the order starts, logs, exits. Resending the
    same batch after a lost reply is safe."""
    batch = ReportBatch(
        started=tuple(StartedReport(s.job_id, s.attempt, s.pid) for s in body.started),
        exits=tuple(
            ExitItem(e.job_id, e.attempt, ExitReport(e.status, e.exit_code, e.signal, e.reason)) for e in body.exits
        ),
        logs=tuple(_logs_item(u.job_id, u.attempt, u.chunks) for u in body.logs),
    )
    result = await report_batch.apply_reports(db, host, batch, policy=execution_policy(request))
    return ReportsOut.model_validate(result)


def _logs_item(job_id: UUID, attempt: int, chunks: list[LogChunkWire]) -> LogsItem:
    try:
        return LogsItem(job_id, attempt, tuple(_chunk(i, c) for i, c in enumerate(chunks)))
    except InvalidInput as exc:
        return LogsItem(job_id, attempt, invalid=(exc.message, str(exc.extra.get("field", "chunks"))))


@router.post("/reconcile", responses=AGENT_ERRORS)
async def reconcile(body: ReconcileIn, host: Host, request: Request, db: DB) -> ReconcileOut:
    """After an agent restart: every run it knows of (complete list), alive or ended. Each gets
    ``continue``, ``kill`` or ``forget``; running jobs it did not list are ``lost``."""
    entries = [
        ReconcileEntry(
            e.job_id,
            e.attempt,
            e.alive,
            ExitReport(e.outcome.status, e.outcome.exit_code, e.outcome.signal, e.outcome.reason)
            if e.outcome
            else None,
        )
        for e in body.jobs
    ]
    result = await reports.reconcile(db, host, entries, policy=execution_policy(request))
    return ReconcileOut.model_validate(result)
