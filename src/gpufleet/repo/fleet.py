"""The fleet at a glance for the dashboard: every live host and GPU with its latest sample, the
pending queue in scheduling order, and utilization series aggregated over many GPUs."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import FleetGpu, FleetHost, GpuStatus, HostStatus, MetricAgg, MetricPoint
from gpufleet.domain.jobs import Job
from gpufleet.repo.jobs import _job
from gpufleet.repo.metrics import _ORIGIN, _point


async def hosts_with_gpus(conn: Conn, *, org_id: UUID, fresh_s: int) -> list[FleetHost]:
    """Live hosts by name, each with its GPUs by index and the GPU's newest sample of the last
    ``fresh_s`` seconds (one index probe per GPU on the metrics primary key)."""
    hosts = await conn.fetch(
        """select id, name, status, status_reason, simulated, last_heartbeat_at
             from hosts where organization_id = $1 and removed_at is null order by name, id""",
        org_id,
    )
    gpus = await conn.fetch(
        """select g.id, g.host_id, g.index, g.model, g.memory_mb, g.status, g.status_reason, g.simulated,
                  g.allocated_milli, g.foreign_usage, m.ts, m.utilization_pct::float8 as util,
                  m.memory_used_mb::float8 as mem, m.temperature_c::float8 as temp, m.power_w::float8 as power
             from gpu_resources g
             join hosts h on h.id = g.host_id and h.organization_id = g.organization_id and h.removed_at is null
             left join lateral (
                   select ts, utilization_pct, memory_used_mb, temperature_c, power_w from gpu_metrics m
                    where m.gpu_id = g.id and m.organization_id = g.organization_id
                      and m.ts >= now() - make_interval(secs => $2)
                    order by m.ts desc limit 1) m on true
            where g.organization_id = $1
            order by g.host_id, g.index""",
        org_id,
        fresh_s,
    )
    by_host: dict[UUID, list[FleetGpu]] = {}
    for r in gpus:
        by_host.setdefault(r["host_id"], []).append(
            FleetGpu(
                id=r["id"],
                host_id=r["host_id"],
                index=r["index"],
                model=r["model"],
                memory_mb=r["memory_mb"],
                status=GpuStatus(r["status"]),
                status_reason=r["status_reason"],
                simulated=r["simulated"],
                allocated_milli=r["allocated_milli"],
                foreign_usage=r["foreign_usage"],
                sampled_at=r["ts"],
                utilization_pct=r["util"],
                memory_used_mb=r["mem"],
                temperature_c=r["temp"],
                power_w=r["power"],
            )
        )
    return [
        FleetHost(
            id=h["id"],
            name=h["name"],
            status=HostStatus(h["status"]),
            status_reason=h["status_reason"],
            simulated=h["simulated"],
            last_heartbeat_at=h["last_heartbeat_at"],
            gpus=by_host.get(h["id"], []),
        )
        for h in hosts
    ]


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
    pattern = None if model is None else "%" + model.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
    gpu_ids = [
        r["id"]
        for r in await conn.fetch(
            """select g.id from gpu_resources g
                 join hosts h on h.id = g.host_id and h.organization_id = g.organization_id and h.removed_at is null
                where g.organization_id = $1 and ($2::uuid is null or g.host_id = $2)
                  and ($3::text is null or g.model ilike $3)""",
            org_id,
            host_id,
            pattern,
        )
    ]
    if not gpu_ids:
        return 0, []
    rows = await conn.fetch(
        f"""select date_bin(make_interval(secs => $5), ts, {_ORIGIN}) as ts, count(*)::int as samples,
                   {fn}(utilization_pct)::float8 as util, {fn}(memory_used_mb)::float8 as mem,
                   {fn}(temperature_c)::float8 as temp, {fn}(power_w)::float8 as power
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


async def pending_in_order(conn: Conn, *, org_id: UUID, limit: int) -> tuple[int, list[Job]]:
    """(how many jobs wait, the first ``limit`` of them) in the order the scheduler considers them."""
    total = await conn.fetchval("select count(*) from jobs where organization_id = $1 and status = 'pending'", org_id)
    rows = await conn.fetch(
        """select * from jobs where organization_id = $1 and status = 'pending'
            order by priority desc, queued_at, id limit $2""",
        org_id,
        limit,
    )
    return int(total), [_job(r) for r in rows]
