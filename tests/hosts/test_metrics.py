"""GPU time series (raw, buckets, rollups) and the fleet summary."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import MetricAgg, MetricBucket, ModelCount
from gpufleet.errors import InvalidInput, NotFound
from gpufleet.services.heartbeats import heartbeat
from gpufleet.services.hosts import remove_host, set_gpu_maintenance
from gpufleet.services.metrics import fleet_summary, gpu_series
from tests.factories import create_org, ctx_for
from tests.hosts.helpers import gpus, register, report, sample, sql, val


async def _hour_start(db: Database, hours_ago: int) -> datetime:
    value = await val(
        db,
        "select date_bin('1 hour', now() - make_interval(hours => $1), timestamptz '2000-01-01 00:00:00+00')",
        hours_ago,
    )
    assert isinstance(value, datetime)
    return value


async def test_series_raw_buckets_and_rollups(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id)
    g = reg.gpus[0]
    base = await _hour_start(db, 3)
    offsets = [0, 30, 60, 90, 150]
    samples = [
        sample(g.uuid, base + timedelta(seconds=s), utilization_pct=10.0 * (i + 1), memory_used_mb=1000 * (i + 1))
        for i, s in enumerate(offsets)
    ]
    await heartbeat(db, me, report(gpus(2), samples))
    hour = base + timedelta(hours=1)

    raw = await gpu_series(db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, max_points=3)
    assert (raw.source, raw.truncated) == ("raw", True)
    assert [(p.ts - base).seconds for p in raw.points] == [0, 30, 60]
    assert [p.utilization_pct for p in raw.points] == [10.0, 20.0, 30.0]

    avg = await gpu_series(db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, bucket=MetricBucket.MINUTE)
    assert [((p.ts - base).seconds, p.utilization_pct, p.memory_used_mb, p.samples) for p in avg.points] == [
        (0, 15.0, 1500.0, 2),
        (60, 35.0, 3500.0, 2),
        (120, 50.0, 5000.0, 1),
    ]
    peak = await gpu_series(
        db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, bucket=MetricBucket.MINUTE, agg=MetricAgg.MAX
    )
    assert [p.utilization_pct for p in peak.points] == [20.0, 40.0, 50.0]
    five = await gpu_series(db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, bucket=MetricBucket.FIVE_MINUTES)
    assert [(p.ts, p.utilization_pct, p.samples) for p in five.points] == [(base, 30.0, 5)]

    # 1h: from raw samples until the hour is rolled up, then from the rollup.
    hourly = await gpu_series(db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, bucket=MetricBucket.HOUR)
    assert [(p.ts, p.utilization_pct, p.samples) for p in hourly.points] == [(base, 30.0, 5)]
    await sql(
        db,
        """insert into gpu_metrics_hourly (organization_id, gpu_id, bucket, samples, utilization_avg, utilization_max)
           values ($1, $2, $3, 7, 31, 77)""",
        org.id,
        g.id,
        base,
    )
    rolled = await gpu_series(
        db, ctx_for(org.id), gpu_id=g.id, start=base, end=hour, bucket=MetricBucket.HOUR, agg=MetricAgg.MAX
    )
    assert [(p.utilization_pct, p.samples) for p in rolled.points] == [(77.0, 7)]

    # A range reaching past raw retention is answered in hourly buckets.
    old = await gpu_series(db, ctx_for(org.id), gpu_id=g.id, start=base - timedelta(days=30), end=hour)
    assert (old.bucket, old.source, len(old.points)) == (MetricBucket.HOUR, "hourly", 1)


async def test_series_refuses_bad_ranges_and_other_tenants(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id)
    base = await _hour_start(db, 1)
    g = reg.gpus[0].id
    with pytest.raises(InvalidInput, match="end must be after start"):
        await gpu_series(db, ctx_for(org.id), gpu_id=g, start=base, end=base)
    with pytest.raises(InvalidInput, match="60 points"):
        await gpu_series(
            db,
            ctx_for(org.id),
            gpu_id=g,
            start=base,
            end=base + timedelta(hours=1),
            bucket=MetricBucket.MINUTE,
            max_points=10,
        )
    other = await create_org(db, "Other")
    with pytest.raises(NotFound):
        await gpu_series(db, ctx_for(other.id), gpu_id=g, start=base, end=base + timedelta(hours=1))


async def test_fleet_summary(db: Database) -> None:
    org = await create_org(db)
    reg1, me1 = await register(db, org.id, "node-1", n=2)
    _, me2 = await register(db, org.id, "node-2", n=1)
    reg3, _ = await register(db, org.id, "node-3", n=4)
    await remove_host(db, ctx_for(org.id), host_id=reg3.host.id)
    await set_gpu_maintenance(db, ctx_for(org.id), gpu_id=reg1.gpus[1].id, on=True)
    await sql(db, "update gpu_resources set simulated = false where id = $1", reg1.gpus[0].id)
    await sql(db, "update hosts set status = 'draining' where id = $1", me2.host_id)
    now_ = await val(db, "select now()")
    assert isinstance(now_, datetime)
    await heartbeat(
        db,
        me1,
        report(
            gpus(2),
            [
                sample(
                    reg1.gpus[0].uuid,
                    now_ - timedelta(minutes=1),
                    utilization_pct=40.0,
                    memory_used_mb=2000,
                    process_count=1,
                ),
                sample(reg1.gpus[0].uuid, now_ - timedelta(minutes=30), utilization_pct=100.0),  # outside the window
                sample(reg1.gpus[1].uuid, now_, utilization_pct=80.0, memory_used_mb=0),
            ],
        ),
    )
    # (after the heartbeat, which would report the model back)
    await sql(db, "update gpu_resources set model = 'H100' where id = $1", reg1.gpus[1].id)
    s = await fleet_summary(db, ctx_for(org.id), window_minutes=15)
    assert s.gpus_total == 3
    assert dict(s.gpus_by_status) == {"available": 2, "maintenance": 1}
    assert s.gpus_by_model == [ModelCount("A100-80GB", 2, 1), ModelCount("H100", 1, 1)]
    assert s.gpus_with_foreign_usage == 1
    assert (s.hosts_total, dict(s.hosts_by_status)) == (2, {"ready": 1, "draining": 1})
    assert (s.samples_in_window, s.avg_utilization_pct, s.avg_memory_used_mb) == (2, 60.0, 1000.0)
    empty = await fleet_summary(db, ctx_for((await create_org(db, "Empty")).id))
    assert (empty.gpus_total, empty.avg_utilization_pct, empty.samples_in_window) == (0, None, 0)
