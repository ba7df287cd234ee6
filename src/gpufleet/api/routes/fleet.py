"""/v1/fleet and /v1/queue: the dashboard's reads of the whole fleet and the pending queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast
from uuid import UUID

from fastapi import APIRouter, Query, Request

from gpufleet.api.deps import (
    BAD_WINDOW,
    DB,
    ModelPart,
    Tenant,
    WindowEnd,
    WindowStart,
    metric_read,
    requires,
)
from gpufleet.domain.hosts import FleetHost, MetricAgg, MetricBucket
from gpufleet.limits import MAX_FEED_PAGE
from gpufleet.schemas.common import vars_of
from gpufleet.schemas.fleet import FleetGpuRead, FleetHostRead, FleetRead, FleetSeriesRead, QueueRead
from gpufleet.schemas.jobs import JobRead
from gpufleet.services import fleet, job_views

router = APIRouter(prefix="/v1")


def _host(h: FleetHost) -> FleetHostRead:
    # Trusted domain objects, 8,000 on a large fleet: constructed, not validated again.
    gpus = [FleetGpuRead.model_construct(**cast(dict[str, Any], vars_of(g))) for g in h.gpus]
    return FleetHostRead.model_validate({**vars_of(h), "gpus": gpus})


@router.get("/fleet", tags=["gpus"], **requires("fleet.read"))
async def fleet_view(ctx: Tenant, db: DB) -> FleetRead:
    """Every live host with its GPUs and each GPU's latest sample (the dashboard's fleet page)."""
    hosts = await fleet.fleet(db, ctx)
    return FleetRead(hosts=[_host(h) for h in hosts], server_time=datetime.now(UTC))


@router.get(
    "/fleet/metrics",
    tags=["gpus"],
    **requires("metrics.read", BAD_WINDOW),
)
async def fleet_metrics(
    request: Request,
    ctx: Tenant,
    db: DB,
    start: WindowStart = None,
    end: WindowEnd = None,
    bucket: MetricBucket = MetricBucket.MINUTE,
    agg: MetricAgg = MetricAgg.AVG,
    host_id: UUID | None = None,
    model: ModelPart = None,
) -> FleetSeriesRead:
    """Samples of every GPU matching `host_id` and `model`, aggregated per 1m/5m/1h bucket."""
    s = await fleet.series(
        db, ctx, host_id=host_id, model=model or None, **metric_read(request, start, end, bucket, agg)
    )
    return FleetSeriesRead.model_validate(s)


@router.get("/queue", tags=["jobs"], **requires("jobs.list"))
async def queue(
    ctx: Tenant,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=MAX_FEED_PAGE, description="How many of the waiting jobs to list.")] = 100,
) -> QueueRead:
    """Pending jobs in the order the scheduler considers them (priority, then time queued), each
    with the reason it waits."""
    total, jobs = await fleet.queue(db, ctx, limit=limit)
    views = await job_views.with_gpus(db, ctx, jobs)
    return QueueRead(pending=total, items=[JobRead.of(v.job, v.gpus, v.cost) for v in views])
