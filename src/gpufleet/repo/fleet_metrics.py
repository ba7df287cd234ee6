"""The fleet's gauges for Prometheus, across every organization (the system path): GPUs, their
latest samples, queues, hosts and webhook backlogs. Read at scrape time by the scheduler leader."""

from __future__ import annotations

from gpufleet.db.pool import Connection as Conn

# A sample older than this is not exported as the GPU's current value.
FRESH_S = 300


async def gpu_counts(conn: Conn) -> list[tuple[str, str, str, str, bool, int]]:
    """(org slug, host name, model, status, simulated, GPUs) of live hosts."""
    rows = await conn.fetch(
        """select o.slug, h.name, g.model, g.status, g.simulated, count(*)::int as n
             from gpu_resources g
             join hosts h on h.id = g.host_id and h.removed_at is null
             join organizations o on o.id = g.organization_id
            group by 1, 2, 3, 4, 5"""
    )
    return [(r["slug"], r["name"], r["model"], r["status"], r["simulated"], r["n"]) for r in rows]


async def latest_samples(
    conn: Conn,
) -> list[tuple[str, str, int, str, str, int, float | None, float | None, float | None, float | None]]:
    """(org, host, index, model, uuid, memory total MiB, utilization %, memory used MiB, °C, W) of
    each GPU of a live host that has a sample of the last ``FRESH_S`` seconds."""
    rows = await conn.fetch(
        """select o.slug, h.name, g.index, g.model, g.uuid, g.memory_mb, m.utilization_pct::float8 as util,
                  m.memory_used_mb::float8 as mem, m.temperature_c::float8 as temp, m.power_w::float8 as power
             from gpu_resources g
             join hosts h on h.id = g.host_id and h.removed_at is null
             join organizations o on o.id = g.organization_id
             join lateral (
                  select utilization_pct, memory_used_mb, temperature_c, power_w from gpu_metrics m
                   where m.gpu_id = g.id and m.ts >= now() - make_interval(secs => $1)
                   order by m.ts desc limit 1) m on true""",
        FRESH_S,
    )
    return [
        (
            r["slug"],
            r["name"],
            r["index"],
            r["model"],
            r["uuid"],
            r["memory_mb"],
            r["util"],
            r["mem"],
            r["temp"],
            r["power"],
        )
        for r in rows
    ]


async def job_counts(conn: Conn) -> list[tuple[str, str, int, float]]:
    """(org, status, jobs, seconds the oldest has been in it) of unfinished jobs; the age of a
    pending job counts from when it was queued."""
    rows = await conn.fetch(
        """select o.slug, j.status, count(*)::int as n,
                  coalesce(extract(epoch from now() - min(case when j.status = 'pending' then j.queued_at
                                                               else j.updated_at end)), 0)::float8 as age
             from jobs j join organizations o on o.id = j.organization_id
            where j.status in ('pending', 'allocated', 'running')
            group by 1, 2"""
    )
    return [(r["slug"], r["status"], r["n"], r["age"]) for r in rows]


async def hosts(conn: Conn) -> list[tuple[str, str, str, float | None]]:
    """(org, host, status, seconds since its last heartbeat, by the database clock) of live hosts.

    Never negative: a heartbeat whose transaction began after this one's (its ``now()`` later than
    ours) can commit before this statement reads, so the age is clamped at 0."""
    rows = await conn.fetch(
        """select o.slug, h.name, h.status,
                  case when h.last_heartbeat_at is not null  -- greatest() would turn a null into 0
                       then greatest(0, extract(epoch from now() - h.last_heartbeat_at))::float8 end as age
             from hosts h join organizations o on o.id = h.organization_id
            where h.removed_at is null"""
    )
    return [(r["slug"], r["name"], r["status"], r["age"]) for r in rows]


async def webhook_backlog(conn: Conn) -> list[tuple[str, int, float]]:
    """(org, deliveries not yet delivered nor given up, seconds the oldest has waited)."""
    rows = await conn.fetch(
        """select o.slug, count(*)::int as n, extract(epoch from now() - min(d.created_at))::float8 as age
             from webhook_deliveries d join organizations o on o.id = d.organization_id
            where d.status in ('pending', 'failed', 'delivering')
            group by 1"""
    )
    return [(r["slug"], r["n"], r["age"]) for r in rows]
