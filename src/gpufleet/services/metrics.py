"""GPU metrics for people: one GPU's time series, and an organization's fleet at a glance."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import FleetSummary, MetricAgg, MetricBucket, MetricSeries, ModelCount
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput
from gpufleet.repo import gpus as gpus_repo
from gpufleet.repo import hosts as hosts_repo
from gpufleet.repo import metrics as repo
from gpufleet.services.lookup import found

MAX_RANGE = timedelta(days=800)


def check_points(start: datetime, end: datetime, bucket: MetricBucket, max_points: int) -> None:
    """A bucketed series over ``start``..``end`` has at most ``max_points`` points (one GPU's or the fleet's)."""
    buckets = (end - start) / timedelta(seconds=bucket.seconds)
    if buckets > max_points:
        raise InvalidInput(
            f"{bucket} buckets over this range make {buckets:.0f} points (at most {max_points}); "
            "use a coarser bucket or a shorter range",
            field="bucket",
        )


async def gpu_series(
    db: Database,
    ctx: TenantContext,
    *,
    gpu_id: UUID,
    start: datetime,
    end: datetime,
    bucket: MetricBucket = MetricBucket.RAW,
    agg: MetricAgg = MetricAgg.AVG,
    raw_retention_days: int = 7,
    max_points: int = 10_000,
) -> MetricSeries:
    """Samples of one GPU over [start, end).

    ``raw``: every sample, at most ``max_points`` (``truncated`` says more exist: ask again
    from the last point's time). ``1m``/``5m``/``1h``: one point per bucket (aligned on UTC)
    with ``agg`` (avg or max) of each field and the number of samples. A range that starts
    before the raw retention is answered in ``1h`` buckets from the hourly rollups (plus raw
    samples for hours not rolled up yet).
    """
    org_id = ctx.org_id
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            raise InvalidInput(f"{name} must carry a time zone", field=name)
    if end <= start:
        raise InvalidInput("end must be after start", field="end")
    if end - start > MAX_RANGE:
        raise InvalidInput(f"the range may span at most {MAX_RANGE.days} days", field="start")
    async with db.transaction(org_id) as conn:
        found(await gpus_repo.get(conn, org_id=org_id, gpu_id=gpu_id), f"GPU {gpu_id}")
        cutoff = await repo.raw_cutoff(conn, retention_days=raw_retention_days)
        if start < cutoff:
            bucket = MetricBucket.HOUR
        if bucket is not MetricBucket.RAW:
            check_points(start, end, bucket, max_points)
        if bucket is MetricBucket.RAW:
            points = await repo.raw_series(
                conn, org_id=org_id, gpu_id=gpu_id, start=start, end=end, limit=max_points + 1
            )
            truncated = len(points) > max_points
            return MetricSeries(gpu_id, start, end, bucket, agg, "raw", points[:max_points], truncated)
        if bucket is MetricBucket.HOUR:
            points = await repo.hourly_series(conn, org_id=org_id, gpu_id=gpu_id, start=start, end=end, agg=agg)
            return MetricSeries(gpu_id, start, end, bucket, agg, "hourly", points)
        points = await repo.bucketed_series(
            conn, org_id=org_id, gpu_id=gpu_id, start=start, end=end, seconds=bucket.seconds, agg=agg
        )
        return MetricSeries(gpu_id, start, end, bucket, agg, "raw", points)


def _models(counts: list[tuple[str, str, bool, bool, int]]) -> list[ModelCount]:
    by_model: dict[str, tuple[int, int]] = {}
    for _, model, simulated, _, n in counts:
        total, sim = by_model.get(model, (0, 0))
        by_model[model] = (total + n, sim + (n if simulated else 0))
    return [ModelCount(m, t, s) for m, (t, s) in sorted(by_model.items())]


async def fleet_summary(db: Database, ctx: TenantContext, *, window_minutes: int = 15) -> FleetSummary:
    """GPUs by status and model, recent average load, foreign usage, hosts by status (live hosts)."""
    org_id = ctx.org_id
    if not 1 <= window_minutes <= 24 * 60:
        raise InvalidInput("window_minutes must be between 1 and 1440", field="window_minutes")
    async with db.transaction(org_id) as conn:
        counts = await repo.gpu_counts(conn, org_id=org_id)
        samples, util, mem = await repo.recent_usage(conn, org_id=org_id, minutes=window_minutes)
        hosts = await hosts_repo.count_by_status(conn, org_id=org_id)
    by_status: dict[str, int] = {}
    for status, _, _, _, n in counts:
        by_status[status] = by_status.get(status, 0) + n
    return FleetSummary(
        organization_id=org_id,
        window_minutes=window_minutes,
        gpus_total=sum(c[4] for c in counts),
        gpus_by_status=by_status,
        gpus_by_model=_models(counts),
        gpus_with_foreign_usage=sum(c[4] for c in counts if c[3]),
        hosts_total=sum(hosts.values()),
        hosts_by_status=hosts,
        avg_utilization_pct=util,
        avg_memory_used_mb=mem,
        samples_in_window=samples,
    )
