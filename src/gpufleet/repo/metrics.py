"""GPU metrics: time series (raw, bucketed, hourly rollups; one GPU's or many GPUs' together),
fleet summaries, and retention.

Buckets are aligned with ``date_bin`` on a fixed UTC origin, so they do not depend on the
session's time zone. Retention functions run on the system path, except partition DDL, which
needs the owner (``Database.owner_connection()``).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import MetricAgg, MetricPoint
from gpufleet.repo.gpus import model_like
from gpufleet.repo.rows import mapper

_ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"
_PARTITION = r"^gpu_metrics_p[0-9]{8}$"


_point = mapper(MetricPoint)


def _bucketed(fn: str) -> str:
    """A point's columns with ``fn`` over the samples of its bucket, $5 seconds wide (``group by 1``)."""
    return f"""date_bin(make_interval(secs => $5), ts, {_ORIGIN}) as ts, count(*)::int as samples,
               {fn}(utilization_pct)::float8 as utilization_pct, {fn}(memory_used_mb)::float8 as memory_used_mb,
               {fn}(temperature_c)::float8 as temperature_c, {fn}(power_w)::float8 as power_w"""


async def raw_series(
    conn: Conn, *, org_id: UUID, gpu_id: UUID, start: datetime, end: datetime, limit: int
) -> list[MetricPoint]:
    rows = await conn.fetch(
        """select ts, utilization_pct::float8 as utilization_pct, memory_used_mb::float8 as memory_used_mb,
                  temperature_c::float8 as temperature_c, power_w::float8 as power_w, 1 as samples
             from gpu_metrics
            where organization_id = $1 and gpu_id = $2 and ts >= $3 and ts < $4
            order by ts limit $5""",
        org_id,
        gpu_id,
        start,
        end,
        limit,
    )
    return [_point(r) for r in rows]


async def bucketed_series(
    conn: Conn, *, org_id: UUID, gpu_id: UUID, start: datetime, end: datetime, seconds: int, agg: MetricAgg
) -> list[MetricPoint]:
    fn = "max" if agg is MetricAgg.MAX else "avg"
    rows = await conn.fetch(
        f"""select {_bucketed(fn)}
              from gpu_metrics
             where organization_id = $1 and gpu_id = $2 and ts >= $3 and ts < $4
             group by 1 order by 1""",
        org_id,
        gpu_id,
        start,
        end,
        seconds,
    )
    return [_point(r) for r in rows]


async def hourly_series(
    conn: Conn, *, org_id: UUID, gpu_id: UUID, start: datetime, end: datetime, agg: MetricAgg
) -> list[MetricPoint]:
    """Hourly points: rollups where they exist, raw samples for hours not rolled up (yet).

    Rollups keep avg and max of utilization and memory, max temperature and avg power; the
    other aggregate of those two falls back to the one kept.
    """
    fn = "max" if agg is MetricAgg.MAX else "avg"
    util, mem = (
        ("utilization_max", "memory_used_max") if agg is MetricAgg.MAX else ("utilization_avg", "memory_used_avg")
    )
    rows = await conn.fetch(
        f"""with roll as (
                select bucket as ts, samples, {util}::float8 as utilization_pct, {mem}::float8 as memory_used_mb,
                       temperature_max::float8 as temperature_c, power_avg::float8 as power_w
                  from gpu_metrics_hourly
                 where organization_id = $1 and gpu_id = $2
                   and bucket >= date_bin('1 hour', $3::timestamptz, {_ORIGIN}) and bucket < $4),
            raw as (
                select date_bin('1 hour', ts, {_ORIGIN}) as ts, count(*)::int as samples,
                       {fn}(utilization_pct)::float8 as utilization_pct, {fn}(memory_used_mb)::float8 as memory_used_mb,
                       max(temperature_c)::float8 as temperature_c, avg(power_w)::float8 as power_w
                  from gpu_metrics
                 where organization_id = $1 and gpu_id = $2 and ts >= $3 and ts < $4
                 group by 1)
            select * from roll
            union all
            select * from raw where ts not in (select ts from roll)
            order by ts""",
        org_id,
        gpu_id,
        start,
        end,
    )
    return [_point(r) for r in rows]


async def aggregate_series(
    conn: Conn,
    *,
    org_id: UUID,
    start: datetime,
    end: datetime,
    seconds: int,
    agg: MetricAgg,
    host_id: UUID | None,
    model: str | None,
) -> tuple[int, list[MetricPoint]]:
    """(GPUs matched, one point per bucket) over the GPUs of live hosts that match ``host_id`` and
    ``model`` (part of the name, any case): ``agg`` of every sample of every matched GPU."""
    fn = "max" if agg is MetricAgg.MAX else "avg"
    gpu_ids = [
        r["id"]
        for r in await conn.fetch(
            """select g.id from gpu_resources g
                 join hosts h on h.id = g.host_id and h.organization_id = g.organization_id and h.removed_at is null
                where g.organization_id = $1 and ($2::uuid is null or g.host_id = $2)
                  and ($3::text is null or g.model ilike $3)""",
            org_id,
            host_id,
            None if model is None else model_like(model),
        )
    ]
    if not gpu_ids:
        return 0, []
    rows = await conn.fetch(
        f"""select {_bucketed(fn)}
              from gpu_metrics
             where organization_id = $1 and gpu_id = any($2::uuid[]) and ts >= $3 and ts < $4
             group by 1 order by 1""",
        org_id,
        gpu_ids,
        start,
        end,
        seconds,
    )
    return len(gpu_ids), [_point(r) for r in rows]


async def gpu_counts(conn: Conn, *, org_id: UUID) -> list[tuple[str, str, bool, bool, int]]:
    """(status, model, simulated, has foreign usage, count) over the GPUs of live hosts."""
    rows = await conn.fetch(
        """select g.status, g.model, g.simulated, g.foreign_usage is not null as foreign_usage, count(*)::int as n
             from gpu_resources g join hosts h on h.id = g.host_id and h.organization_id = g.organization_id
            where g.organization_id = $1 and h.removed_at is null
            group by 1, 2, 3, 4""",
        org_id,
    )
    return [(r["status"], r["model"], r["simulated"], r["foreign_usage"], r["n"]) for r in rows]


async def recent_usage(conn: Conn, *, org_id: UUID, minutes: int) -> tuple[int, float | None, float | None]:
    """(samples, average utilization, average memory used) of the organization's last ``minutes``."""
    row = await conn.fetchrow(
        """select count(*)::int as n, avg(utilization_pct)::float8 as util, avg(memory_used_mb)::float8 as mem
             from gpu_metrics where organization_id = $1 and ts >= now() - make_interval(mins => $2)""",
        org_id,
        minutes,
    )
    assert row is not None
    return row["n"], row["util"], row["mem"]


# ---------------------------------------------------------------- retention


async def ensure_partitions(conn: Conn, *, days_back: int, days_ahead: int) -> int:
    """Owner connection: create missing daily partitions; how many were created."""
    return int(await conn.fetchval("select gpufleet_ensure_metric_partitions($1, $2)", days_back, days_ahead))


async def rollup_window(conn: Conn, *, delay_s: int) -> tuple[datetime, datetime] | None:
    """System path: the hours to roll up, [after the latest rollup, the last hour ended ``delay_s`` ago).

    With no rollup at all yet, from the oldest raw sample. Samples arriving for an hour after
    it was rolled up stay in the raw data only.
    """
    row = await conn.fetchrow(
        f"""select coalesce((select max(bucket) + interval '1 hour' from gpu_metrics_hourly),
                            (select date_bin('1 hour', min(ts), {_ORIGIN}) from gpu_metrics)) as start,
                   date_bin('1 hour', now() - make_interval(secs => $1), {_ORIGIN}) as stop""",
        delay_s,
    )
    assert row is not None
    if row["start"] is None or row["start"] >= row["stop"]:
        return None
    return row["start"], row["stop"]


async def roll_up(conn: Conn, *, start: datetime, end: datetime) -> int:
    """System path: (re)compute the hourly rollups of [start, end) for every GPU; rows written."""
    status = await conn.execute(
        f"""insert into gpu_metrics_hourly (organization_id, gpu_id, bucket, samples, utilization_avg,
                                            utilization_max, memory_used_avg, memory_used_max, temperature_max,
                                            power_avg)
            select organization_id, gpu_id, date_bin('1 hour', ts, {_ORIGIN}), count(*), avg(utilization_pct),
                   max(utilization_pct), avg(memory_used_mb), max(memory_used_mb), max(temperature_c), avg(power_w)
              from gpu_metrics
             where ts >= $1 and ts < $2
             group by 1, 2, 3
            on conflict (gpu_id, bucket) do update
               set samples = excluded.samples, utilization_avg = excluded.utilization_avg,
                   utilization_max = excluded.utilization_max, memory_used_avg = excluded.memory_used_avg,
                   memory_used_max = excluded.memory_used_max, temperature_max = excluded.temperature_max,
                   power_avg = excluded.power_avg""",
        start,
        end,
    )
    return int(status.split()[-1])


async def raw_cutoff(conn: Conn, *, retention_days: int) -> datetime:
    """The start of the oldest day of raw samples kept: a partition boundary, so deletes prune."""
    value: datetime = await conn.fetchval("select (current_date - $1::int)::timestamptz", retention_days)
    return value


async def old_partitions(conn: Conn, *, retention_days: int) -> list[str]:
    """Owner connection: daily partitions of days before the retention window."""
    rows = await conn.fetch(
        """select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
            where i.inhparent = 'gpu_metrics'::regclass and c.relname ~ $1
              and to_date(substr(c.relname, 14), 'YYYYMMDD') < current_date - $2::int
            order by 1""",
        _PARTITION,
        retention_days,
    )
    return [r["relname"] for r in rows]


async def drop_partition(conn: Conn, *, name: str, lock_timeout_ms: int = 5000) -> None:
    """Owner connection: drop one daily partition, waiting at most ``lock_timeout_ms`` for writers."""
    async with conn.transaction():
        await conn.execute(f"set local lock_timeout = {int(lock_timeout_ms)}")
        stmt = await conn.fetchval(
            """select format('drop table if exists %I', relname) from pg_class
                where relname = $1 and relname ~ $2 and relispartition""",
            name,
            _PARTITION,
        )
        if stmt is not None:
            await conn.execute(stmt)


async def delete_raw_before(conn: Conn, *, cutoff: datetime) -> int:
    """System path: samples older than ``cutoff`` left outside the daily partitions (the default one)."""
    status = await conn.execute("delete from gpu_metrics where ts < $1", cutoff)
    return int(status.split()[-1])


async def delete_rollups_before(conn: Conn, *, retention_days: int) -> int:
    status = await conn.execute(
        "delete from gpu_metrics_hourly where bucket < now() - make_interval(days => $1)", retention_days
    )
    return int(status.split()[-1])
