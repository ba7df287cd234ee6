"""The dashboard's reads: the whole fleet with its latest samples, utilization over many GPUs,
and the queue as the scheduler sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import FleetHost, MetricAgg, MetricBucket, MetricPoint
from gpufleet.domain.jobs import Job
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput
from gpufleet.repo import hosts as hosts_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import metrics as metrics_repo
from gpufleet.services.metrics import check_points

# A sample older than this is not "the GPU now": its tile shows no numbers.
FRESH_S = 300


@dataclass(frozen=True, slots=True)
class FleetSeries:
    start: datetime
    end: datetime
    bucket: MetricBucket
    agg: MetricAgg
    gpus: int
    points: list[MetricPoint]


async def fleet(db: Database, ctx: TenantContext) -> list[FleetHost]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        return await hosts_repo.hosts_with_gpus(conn, org_id=org_id, fresh_s=FRESH_S)


async def series(
    db: Database,
    ctx: TenantContext,
    *,
    start: datetime,
    end: datetime,
    bucket: MetricBucket,
    agg: MetricAgg,
    host_id: UUID | None = None,
    model: str | None = None,
    raw_retention_days: int = 7,
    max_points: int = 10_000,
) -> FleetSeries:
    """Utilization, memory, temperature and power over the matched GPUs, per bucket, from the raw
    samples (so within their retention)."""
    org_id = ctx.org_id
    if end <= start:
        raise InvalidInput("end must be after start", field="end")
    if bucket is MetricBucket.RAW:
        raise InvalidInput("bucket must be 1m, 5m or 1h: a series over many GPUs is always bucketed", field="bucket")
    async with db.transaction(org_id) as conn:
        cutoff = await metrics_repo.raw_cutoff(conn, retention_days=raw_retention_days)
        if start < cutoff:
            raise InvalidInput(
                f"start is before the raw samples kept ({raw_retention_days} days); ask one GPU's metrics "
                "for longer ranges",
                field="start",
            )
        check_points(start, end, bucket, max_points)
        gpus, points = await metrics_repo.aggregate_series(
            conn,
            org_id=org_id,
            start=start,
            end=end,
            seconds=bucket.seconds,
            agg=agg,
            host_id=host_id,
            model=model,
        )
    return FleetSeries(start, end, bucket, agg, gpus, points)


async def queue(db: Database, ctx: TenantContext, *, limit: int) -> tuple[int, list[Job]]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        return await jobs_repo.pending_in_order(conn, org_id=org_id, limit=limit)
