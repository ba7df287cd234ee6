"""A heartbeat's writes in one statement: stamp the host, store its samples, read its GPUs.

One round trip instead of three (the host UPDATE, the GPU SELECT, the samples INSERT): at
hundreds of heartbeats a second the statements, not the samples, are what PostgreSQL and the
server spend their time on. Samples go in by ``unnest`` of parallel arrays (COPY is not allowed
on row-level-security tables for the runtime role).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import SAMPLE_COLUMNS, GpuDetail, HostFacts, HostStatus, SampleSeries
from gpufleet.repo.gpus import gpu_row
from gpufleet.repo.hosts import facts_params, facts_set


@dataclass(frozen=True, slots=True)
class Beat:
    old_status: HostStatus
    status: HostStatus
    now: datetime  # the database clock
    previous_beat: datetime | None


@dataclass(frozen=True, slots=True)
class Stamped:
    beat: Beat
    gpus: list[GpuDetail]  # the host's GPUs by (index, uuid), as the statement's snapshot saw them
    samples_stored: bool  # the span was within the skew: every sample of a known GPU went in
    raced: bool  # another transaction changed the host while this one waited for its lock


def sample_columns(series: Sequence[SampleSeries]) -> list[list[Any]]:
    """The samples as the ``unnest`` arrays: uuid, ts, then each field of ``SAMPLE_COLUMNS``."""
    uuids: list[str] = []
    ts: list[datetime] = []
    cols: list[list[Any]] = [[] for _ in SAMPLE_COLUMNS]
    for one in series:
        n = len(one.ts)
        uuids += [one.uuid] * n
        ts += one.ts
        for values, name in zip(cols, SAMPLE_COLUMNS, strict=True):
            got = getattr(one, name)
            values += got if got is not None else [None] * n
    return [uuids, ts, *cols]


async def stamp(
    conn: Conn,
    *,
    org_id: UUID,
    host_id: UUID,
    facts: HostFacts | None,
    credential_hash: bytes | None,
    series: Sequence[SampleSeries],
    span: tuple[datetime, datetime] | None,
    max_skew_s: float,
) -> Stamped | None:
    """Stamp the heartbeat with the database clock (an unreachable host returns to its prior
    status), store the samples and read the host's GPUs, in one statement.

    ``None``: the host is revoked (or gone) or ``credential_hash`` is no longer its credential;
    nothing is written then. The samples go in only when ``span`` (their earliest and latest
    time) is within ``max_skew_s`` of the database clock, and only for GPUs the host had when
    the statement began: a sample of a GPU this heartbeat adds is the caller's to insert again
    (``insert_samples`` skips what is stored). Locks the host row, so two heartbeats of one
    host serialise; the GPUs are read in the statement's snapshot, so ``raced`` says
    when a transaction that changed the host committed while this one waited for the lock
    (the GPUs must be read again then to see its changes).
    """
    set_facts = f", {facts_set(16)}" if facts is not None else ""
    rows = await conn.fetch(
        f"""with prev as (
                select id, xmin as version, status, status_before_unreachable, last_heartbeat_at from hosts
                 where organization_id = $1 and id = $2 and revoked_at is null
                   and ($3::bytea is null or credential_hash = $3)
                 for update),
            beat as (
                update hosts h
                   set last_heartbeat_at = now(),
                       status = case when prev.status = 'unreachable'
                                     then coalesce(prev.status_before_unreachable, 'ready') else prev.status end,
                       status_before_unreachable = null,
                       status_reason = case when prev.status = 'unreachable' then null else h.status_reason end
                       {set_facts}
                  from prev
                 where h.id = prev.id
             returning prev.status as old_status, h.status, now() as now, prev.last_heartbeat_at as previous_beat,
                       prev.version),
            ok as (
                select $13::timestamptz is null
                       or ($13 >= now() - $15 * interval '1 second' and $14 <= now() + $15 * interval '1 second') as v),
            ins as (
                insert into gpu_metrics (organization_id, gpu_id, ts, utilization_pct, memory_used_mb, temperature_c,
                                         power_w, ecc_uncorrected, xid_errors, process_count)
                select $1, g.id, s.ts, s.util, s.mem, s.temp, s.power, s.ecc, s.xid, s.procs
                  from unnest($4::text[], $5::timestamptz[], $6::real[], $7::int[], $8::real[], $9::real[],
                              $10::bigint[], $11::bigint[], $12::int[]) as s(uuid, ts, util, mem, temp, power, ecc, xid,
                                                                          procs)
                  join gpu_resources g on g.organization_id = $1 and g.host_id = $2 and g.uuid = s.uuid
                 where exists (select from beat) and (select v from ok)
                on conflict (gpu_id, ts) do nothing)
         select b.old_status as beat_old_status, b.status as beat_status, b.now as beat_now,
                b.previous_beat as beat_previous_beat, (select v from ok) as beat_samples_stored,
                b.version is distinct from (select xmin from hosts where organization_id = $1 and id = $2)
                    as beat_raced,
                g.*
           from beat b
           left join gpu_resources g on g.organization_id = $1 and g.host_id = $2
          order by g.index, g.uuid""",
        org_id,
        host_id,
        credential_hash,
        *sample_columns(series),
        span[0] if span is not None else None,
        span[1] if span is not None else None,
        float(max_skew_s),
        *(facts_params(facts) if facts is not None else []),
    )
    if not rows:
        return None
    first = rows[0]
    beat = Beat(
        HostStatus(first["beat_old_status"]),
        HostStatus(first["beat_status"]),
        first["beat_now"],
        first["beat_previous_beat"],
    )
    gpus = [gpu_row(r) for r in rows if r["id"] is not None]
    return Stamped(beat, gpus, bool(first["beat_samples_stored"]), bool(first["beat_raced"]))


async def insert_samples(conn: Conn, *, org_id: UUID, host_id: UUID, series: Sequence[SampleSeries]) -> int:
    """Insert samples in one statement; GPU uuids resolve within (org, host).

    A sample already stored (same GPU and time: an agent retrying a heartbeat whose answer it
    lost, or ``stamp`` stored it) is skipped, so a retry is harmless. Returns the rows written.
    """
    if not any(one.ts for one in series):
        return 0
    status = await conn.execute(
        """insert into gpu_metrics (organization_id, gpu_id, ts, utilization_pct, memory_used_mb, temperature_c,
                                    power_w, ecc_uncorrected, xid_errors, process_count)
           select $1, g.id, s.ts, s.util, s.mem, s.temp, s.power, s.ecc, s.xid, s.procs
             from unnest($3::text[], $4::timestamptz[], $5::real[], $6::int[], $7::real[], $8::real[], $9::bigint[],
                         $10::bigint[], $11::int[]) as s(uuid, ts, util, mem, temp, power, ecc, xid, procs)
             join gpu_resources g on g.organization_id = $1 and g.host_id = $2 and g.uuid = s.uuid
           on conflict (gpu_id, ts) do nothing""",
        org_id,
        host_id,
        *sample_columns(series),
    )
    return int(status.split()[-1])
