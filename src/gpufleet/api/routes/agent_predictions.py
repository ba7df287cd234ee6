"""/v1/agent/replicas/* and /v1/agent/predictions/*: the model runner's side of predictions, with
the host credential. Replicas are fenced by their job attempt like job reports (409 when stale);
prediction events are judged one by one (`ok: false` with the reason)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request

from gpufleet.api.deps import DB
from gpufleet.api.routes.agent import AGENT_ERRORS, Host, execution_policy
from gpufleet.api.routes.agent_jobs import STALE
from gpufleet.api.routes.predictions import hub_of
from gpufleet.schemas.predictions import ClaimIn, ClaimOut, EventResultOut, EventsIn, EventsOut, ReplicaStateIn
from gpufleet.services import prediction_agent, replicas

router = APIRouter(prefix="/v1/agent", tags=["agent"])


@router.post("/replicas/{replica_id}/state", status_code=204, responses=STALE)
async def replica_state(replica_id: UUID, body: ReplicaStateIn, host: Host, db: DB) -> None:
    """`ready`: setup() is done; the replica claims predictions from now on. `failed`: setup()
    failed (`error`); then report the job's exit as failed."""
    await replicas.report_state(
        db,
        host,
        replica_id,
        job_id=body.job_id,
        attempt=body.attempt,
        state=body.state,
        environment_s=body.environment_s,
        environment_cached=body.environment_cached,
        setup_s=body.setup_s,
        error=body.error,
    )


@router.post("/predictions/claim", responses=AGENT_ERRORS)
async def claim_predictions(body: ClaimIn, host: Host, request: Request, db: DB) -> ClaimOut:
    """Predictions for the offered ready replicas (up to `free_slots` each, oldest first), cancels
    and drains to act on. With nothing to do, a long poll of up to `wait_s` seconds."""
    found = await prediction_agent.claim(
        db,
        host,
        [r.to_domain() for r in body.replicas],
        wait_s=body.wait_s,
        hub=hub_of(request),
        poll_s=execution_policy(request).poll_s,
        max_wait_s=execution_policy(request).assignment_poll_max_s,
        gone=request.is_disconnected,
    )
    return ClaimOut.of(found)


@router.post("/predictions/events", responses=AGENT_ERRORS)
async def prediction_events(body: EventsIn, host: Host, db: DB) -> EventsOut:
    """Logs, streamed output items and ends of running predictions, in order; each applied on its
    own (`ok: false` and a `reason` for a stale one: the rest still apply)."""
    results = await prediction_agent.apply_events(db, host, [e.to_domain() for e in body.events])
    return EventsOut(results=[EventResultOut.model_validate(r) for r in results])
