"""Metric retention: hourly rollups of complete hours, then partitions and rows past retention go."""

from __future__ import annotations

from datetime import datetime, timedelta

from gpufleet.background import retention
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import MetricBucket
from gpufleet.services.metrics import gpu_series
from tests.factories import create_org, ctx_for
from tests.hosts.helpers import register, sql, val

ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"


async def _partitions(db: Database) -> set[str]:
    async with db.owner_connection() as conn:
        rows = await conn.fetch(
            """select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                where i.inhparent = 'gpu_metrics'::regclass"""
        )
    return {r[0] for r in rows}


async def _insert(db: Database, org_id: object, gpu_id: object, ts_sql: str, util: float) -> None:
    await sql(
        db,
        f"insert into gpu_metrics (organization_id, gpu_id, ts, utilization_pct, memory_used_mb) values ($1, $2, {ts_sql}, $3, 100)",
        org_id,
        gpu_id,
        util,
    )


async def test_rollup_partitions_and_retention(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id)
    g = reg.gpus[0].id
    async with db.owner_connection() as conn:
        await conn.execute("select gpufleet_ensure_metric_partitions(10, 0)")
    old_day = await val(db, "select 'gpu_metrics_p' || to_char(current_date - 9, 'YYYYMMDD')")
    kept_day = await val(db, "select 'gpu_metrics_p' || to_char(current_date - 6, 'YYYYMMDD')")
    assert {old_day, kept_day} <= await _partitions(db)

    await _insert(db, org.id, g, "now() - interval '30 days'", 10)  # outside any partition: the default one
    await _insert(db, org.id, g, "now() - interval '9 days'", 20)
    await _insert(db, org.id, g, "now() - interval '9 days' + interval '1 second'", 40)
    two_hours_ago = f"date_bin('1 hour', now() - interval '2 hours', {ORIGIN}) + interval '10 minutes'"
    await _insert(db, org.id, g, two_hours_ago, 50)
    await _insert(db, org.id, g, "now()", 60)  # the current hour is not complete: not rolled up
    await sql(
        db,
        "insert into gpu_metrics_hourly (organization_id, gpu_id, bucket, samples) values ($1, $2, now() - interval '401 days', 1)",
        org.id,
        g,
    )

    report = await retention.run_once(db, retention_days=7, rollup_retention_days=400, rollup_delay_s=0)
    assert old_day in report.partitions_dropped and kept_day not in report.partitions_dropped
    assert report.raw_rows_deleted == 1 and report.rollups_deleted == 1
    parts = await _partitions(db)
    assert old_day not in parts and kept_day in parts
    ahead = await val(db, "select 'gpu_metrics_p' || to_char(current_date + 3, 'YYYYMMDD')")
    assert ahead in parts

    async with db.system_transaction() as conn:
        raw = [
            r[0] for r in await conn.fetch("select utilization_pct from gpu_metrics where gpu_id = $1 order by ts", g)
        ]
        hourly = await conn.fetch(
            "select bucket, samples, utilization_avg, utilization_max from gpu_metrics_hourly where gpu_id = $1 order by bucket",
            g,
        )
    assert raw == [50.0, 60.0]
    assert report.rollup_rows == len(hourly)  # 30 d, 9 d (one hour, or two across a boundary), 2 h ago
    assert [(r["samples"], r["utilization_avg"], r["utilization_max"]) for r in hourly] == [
        (1, 10.0, 10.0),
        *([(2, 30.0, 40.0)] if hourly[1]["samples"] == 2 else [(1, 20.0, 20.0), (1, 40.0, 40.0)]),
        (1, 50.0, 50.0),
    ]

    # Idempotent: nothing new to roll up, nothing to drop.
    again = await retention.run_once(db, retention_days=7, rollup_retention_days=400, rollup_delay_s=0)
    assert (again.rollup_rows, again.partitions_dropped, again.raw_rows_deleted) == (0, [], 0)

    # Old ranges are served from the rollups.
    start = await val(db, "select now() - interval '10 days'")
    assert isinstance(start, datetime)
    series = await gpu_series(db, ctx_for(org.id), gpu_id=g, start=start, end=start + timedelta(days=2))
    assert series.bucket is MetricBucket.HOUR and series.source == "hourly"
    assert sum(p.samples for p in series.points) == 2
