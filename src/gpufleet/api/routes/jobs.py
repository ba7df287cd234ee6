"""/v1/jobs: submit, list, get, cancel, events, and a bounded long-poll wait."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from gpufleet.api.deps import DB, DEFAULT_LIMIT, NOT_FOUND, Cursor, Limit, Tenant, requires
from gpufleet.api.idempotency import IDEMPOTENT_RESPONSES, IdempotencyKey, answer
from gpufleet.api.state import hub_of
from gpufleet.domain.jobs import JobStatus
from gpufleet.errors import InvalidInput
from gpufleet.limits import WAIT_MAX_S
from gpufleet.pagination import decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.jobs import EventRead, JobCreate, JobRead
from gpufleet.services import idempotency, job_views, jobs
from gpufleet.services.idempotency import IdempotentRequest

router = APIRouter(prefix="/v1", tags=["jobs"])

FINISHED: dict[int, dict[str, Any]] = {409: {"description": "the job already finished"}}

StatusFilter = Annotated[
    list[JobStatus] | None, Query(description="Only jobs in these states (repeat the parameter for several).")
]
LabelFilter = Annotated[
    list[str] | None,
    Query(max_length=64, description="`key=value`; only jobs carrying every given label (repeatable)."),
]


@router.post("/jobs", status_code=201, **requires("jobs.submit", IDEMPOTENT_RESPONSES))
async def submit_job(
    body: JobCreate, ctx: Tenant, db: DB, response: Response, idempotency_key: IdempotencyKey = None
) -> JobRead:
    """Queue a job. It is placed by the scheduler; a job over quota waits, it is never refused.
    With `Idempotency-Key`, a retry of the same request returns the first answer instead of a second job."""
    spec = body.to_spec()
    try:
        request = IdempotentRequest.of("POST /v1/jobs", idempotency_key, body.model_dump(mode="json"))
        reply = await idempotency.once(
            db,
            ctx,
            request,
            work=lambda conn: jobs.submit_in(conn, ctx, spec),
            # nothing accrues before it is placed
            render=lambda job: JobRead.of(job, cost=Decimal(0)),
            status=201,
        )
    except InvalidInput as exc:
        raise body.wire_error(exc) from exc
    return answer(reply, response, JobRead)


@router.get("/jobs", **requires("jobs.list"))
async def list_jobs(
    ctx: Tenant,
    db: DB,
    status: StatusFilter = None,
    label: LabelFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    kind: Annotated[
        Literal["job", "replica", "all"],
        Query(description="`job` (default): batch jobs; `replica`: deployments' replicas; `all`: both."),
    ] = "job",
) -> Page[JobRead]:
    """Newest first. Replicas of deployments are jobs too, listed only with `kind=replica` or `all`."""
    page = await jobs.list_jobs(db, ctx, status=status, labels=_labels(label), limit=limit, cursor=cursor, kind=kind)
    views = await job_views.with_gpus(db, ctx, page.items)
    return Page[JobRead](items=[JobRead.of(v.job, v.gpus, v.cost) for v in views], next_cursor=page.next_cursor)


@router.get("/jobs/{job_id}", **requires("jobs.read", NOT_FOUND))
async def get_job(job_id: UUID, ctx: Tenant, db: DB) -> JobRead:
    """The job; while pending, `pending_reason` says why it waits."""
    view = await job_views.get(db, ctx, job_id)
    return JobRead.of(view.job, view.gpus, view.cost)


@router.post("/jobs/{job_id}/cancel", **requires("jobs.cancel", {**NOT_FOUND, **FINISHED}))
async def cancel_job(job_id: UUID, ctx: Tenant, db: DB) -> JobRead:
    """Pending or allocated: cancelled at once, its GPUs released. Running: `cancel_requested_at`
    is set and the agent stops it. Cancelled already: unchanged. Otherwise finished: 409."""
    view = await job_views.cancel(db, ctx, job_id)
    return JobRead.of(view.job, view.gpus, view.cost)


@router.get("/jobs/{job_id}/events", **requires("jobs.read", NOT_FOUND))
async def job_events(
    job_id: UUID,
    ctx: Tenant,
    db: DB,
    after_seq: Annotated[int, Query(ge=0, le=2**62, description="Only events after this `seq`.")] = 0,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[EventRead]:
    """The job's history, oldest first."""
    seen = decode_cursor(cursor, (int,))
    rows = await jobs.events(db, ctx, job_id, after_seq=max(after_seq, seen[0] if seen else 0), limit=limit)
    return Page[EventRead].of(rows, limit, EventRead.of, key=lambda e: (e.seq,))


@router.get("/jobs/{job_id}/wait", **requires("jobs.read", NOT_FOUND))
async def wait_job(
    request: Request,
    job_id: UUID,
    ctx: Tenant,
    db: DB,
    timeout_s: Annotated[
        float, Query(ge=0, le=WAIT_MAX_S, allow_inf_nan=False, description=f"At most {WAIT_MAX_S:g} seconds.")
    ] = 30.0,
) -> JobRead:
    """Long-poll: the job once it has finished, or as it is after `timeout_s` (check `status`)."""
    view = await job_views.wait(db, ctx, job_id, timeout_s, hub=hub_of(request))
    return JobRead.of(view.job, view.gpus, view.cost)


def _labels(given: list[str] | None) -> dict[str, str] | None:
    if not given:
        return None
    out: dict[str, str] = {}
    for item in given:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidInput(f"label: {item!r} is not key=value", field="label")
        if "\x00" in item:
            raise InvalidInput("label: must not contain NUL characters", field="label")
        out[key.strip()] = value
    return out
