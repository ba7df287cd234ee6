"""Replicas: one long-running job (kind 'replica') each, running one model worker; every SQL statement about them.

A replica's status moves starting -> ready -> draining -> stopped (any of them -> stopped when its
job ends); each write is guarded by the statuses it may come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.predictions import AssignedReplica, Replica, ReplicaStatus
from gpufleet.repo.rows import Table, from_row, mapper, optional

# The agent is told again to drain a replica (or cancel a prediction) if it still lists it this long after.
RESEND_S = 10.0

_WITH_JOB = """select r.*, j.status as job_status, j.host_id,
                      extract(epoch from now() - r.last_active_at)::float8 as idle_s,
                      (select count(*) from predictions p where p.replica_id = r.id and p.status = 'processing')
                          as in_flight
                 from replicas r join jobs j on j.id = r.job_id"""


_replica = mapper(
    Replica,
    status=ReplicaStatus,
    job_status=optional(),
    host_id=optional(),
    in_flight=from_row(lambda r: int(r.get("in_flight") or 0)),
    idle_s=from_row(lambda r: float(r.get("idle_s") or 0.0)),
)
_replicas = Table("replicas", _replica, insert="organization_id, deployment_id, version_id, job_id, slots, release")


async def create(
    conn: Conn, *, org_id: UUID, deployment_id: UUID, version_id: UUID, job_id: UUID, slots: int, release: int
) -> Replica:
    return await _replicas.insert(conn, org_id, deployment_id, version_id, job_id, slots, release)


async def get(conn: Conn, *, org_id: UUID, replica_id: UUID, lock: bool = False) -> Replica | None:
    suffix = " for no key update of r" if lock else ""
    row = await conn.fetchrow(f"{_WITH_JOB} where r.organization_id = $1 and r.id = $2{suffix}", org_id, replica_id)
    return _replica(row) if row else None


async def for_job(conn: Conn, *, org_id: UUID, job_id: UUID) -> Replica | None:
    row = await conn.fetchrow("select * from replicas where organization_id = $1 and job_id = $2", org_id, job_id)
    return _replica(row) if row else None


async def of_deployment(conn: Conn, *, org_id: UUID, deployment_id: UUID, live_only: bool = True) -> list[Replica]:
    """The deployment's replicas (live ones only by default), oldest first, with job status and load."""
    rows = await conn.fetch(
        f"""{_WITH_JOB}
             where r.organization_id = $1 and r.deployment_id = $2 and (not $3 or r.status <> 'stopped')
             order by r.created_at, r.id""",
        org_id,
        deployment_id,
        live_only,
    )
    return [_replica(r) for r in rows]


async def has_live(conn: Conn, *, org_id: UUID, deployment_id: UUID, version_id: UUID) -> bool:
    """Whether a replica of this version that may still claim (starting or ready) exists."""
    return bool(
        await conn.fetchval(
            """select exists (select 1 from replicas
                               where organization_id = $1 and deployment_id = $2 and version_id = $3
                                 and status in ('starting', 'ready'))""",
            org_id,
            deployment_id,
            version_id,
        )
    )


async def stop_for_job(conn: Conn, *, org_id: UUID, job_id: UUID, error: str | None) -> Replica | None:
    """The job of a replica ended: the replica is stopped (None when it had no live replica)."""
    row = await conn.fetchrow(
        """update replicas set status = 'stopped', stopped_at = now(), error = coalesce(error, $3)
            where organization_id = $1 and job_id = $2 and status <> 'stopped' returning *""",
        org_id,
        job_id,
        error,
    )
    return _replica(row) if row else None


async def set_ready(
    conn: Conn,
    *,
    org_id: UUID,
    replica_id: UUID,
    slots: int,
    environment_s: float | None,
    environment_cached: bool | None,
    setup_s: float | None,
) -> Replica | None:
    """starting -> ready (None when it was not starting: a resend, or drained meanwhile)."""
    row = await conn.fetchrow(
        """update replicas set status = 'ready', ready_at = now(), last_active_at = now(), slots = $3,
                  environment_s = $4, environment_cached = $5, setup_s = $6
            where organization_id = $1 and id = $2 and status = 'starting' returning *""",
        org_id,
        replica_id,
        slots,
        environment_s,
        environment_cached,
        setup_s,
    )
    return _replica(row) if row else None


async def set_timings(
    conn: Conn,
    *,
    org_id: UUID,
    replica_id: UUID,
    environment_s: float | None,
    environment_cached: bool | None,
    setup_s: float | None,
    error: str | None,
) -> None:
    await conn.execute(
        """update replicas set environment_s = coalesce($3, environment_s),
                  environment_cached = coalesce($4, environment_cached), setup_s = coalesce($5, setup_s),
                  error = coalesce($6, error)
            where organization_id = $1 and id = $2""",
        org_id,
        replica_id,
        environment_s,
        environment_cached,
        setup_s,
        error,
    )


async def drain(conn: Conn, *, org_id: UUID, replica_ids: Sequence[UUID]) -> list[UUID]:
    """starting/ready -> draining; the ids moved."""
    rows = await conn.fetch(
        """update replicas set status = 'draining', drain_sent_at = null
            where organization_id = $1 and id = any($2::uuid[]) and status in ('starting', 'ready')
        returning id""",
        org_id,
        list(replica_ids),
    )
    return [r[0] for r in rows]


async def touch(conn: Conn, *, org_id: UUID, replica_ids: Sequence[UUID]) -> None:
    """A claim or a completion: the replica is not idle."""
    if replica_ids:
        await conn.execute(
            "update replicas set last_active_at = now() where organization_id = $1 and id = any($2::uuid[])",
            org_id,
            sorted(set(replica_ids)),
        )


_assigned = mapper(AssignedReplica, python_packages=list)


async def for_assignments(conn: Conn, *, org_id: UUID, job_ids: Sequence[UUID]) -> dict[UUID, AssignedReplica]:
    """Per replica job among ``job_ids``: what its model runner serves (the assignment's ``replica``)."""
    rows = await conn.fetch(
        """select r.job_id, r.id as replica_id, r.slots as concurrency,
                  o.slug || '/' || d.name as deployment, o.slug || '/' || m.name as model, v.id as version_id,
                  v.digest, v.predict_ref, v.python_packages, v.python_version, v.gpu, v.is_generator
             from replicas r
             join deployments d on d.id = r.deployment_id
             join model_versions v on v.id = r.version_id
             join models m on m.id = v.model_id
             join organizations o on o.id = r.organization_id
            where r.organization_id = $1 and r.job_id = any($2::uuid[])""",
        org_id,
        list(job_ids),
    )
    return {r["job_id"]: _assigned(r) for r in rows}


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What a claim needs to know of an offered replica: is it this host's current attempt, may it claim."""

    replica_id: UUID
    deployment_id: UUID
    version_id: UUID
    status: ReplicaStatus
    job_id: UUID
    attempt: int
    host_id: UUID | None
    job_status: str
    drain_due: bool  # draining, and the agent was not told in the last RESEND_S
    ready_at: datetime | None
    environment_s: float | None
    setup_s: float | None
    free: int  # its slots less the predictions it is processing now


_claim_view = mapper(ClaimView, status=ReplicaStatus)


async def claim_views(conn: Conn, *, org_id: UUID, replica_ids: Sequence[UUID]) -> dict[UUID, ClaimView]:
    """The replicas, their rows locked in id order (before any prediction row: the lock order), so a
    replica cannot stop between this check and the claim or report that follows it."""
    rows = await conn.fetch(
        """select r.id as replica_id, r.deployment_id, r.version_id, r.status, r.job_id, j.attempt, j.host_id,
                  j.status as job_status,
                  r.ready_at, r.environment_s, r.setup_s,
                  r.slots - (select count(*) from predictions p
                              where p.replica_id = r.id and p.status = 'processing')::int as free,
                  (r.status = 'draining'
                   and (r.drain_sent_at is null or r.drain_sent_at < now() - make_interval(secs => $3))) as drain_due
             from replicas r join jobs j on j.id = r.job_id
            where r.organization_id = $1 and r.id = any($2::uuid[])
            order by r.id
              for no key update of r""",
        org_id,
        sorted(set(replica_ids)),
        RESEND_S,
    )
    return {view.replica_id: view for view in map(_claim_view, rows)}


async def mark_drain_sent(conn: Conn, *, org_id: UUID, replica_ids: Sequence[UUID]) -> None:
    if replica_ids:
        await conn.execute(
            "update replicas set drain_sent_at = now() where organization_id = $1 and id = any($2::uuid[])",
            org_id,
            list(replica_ids),
        )


# ------------------------------------------------------------------------------ system path


async def hosts_with_prediction_work(conn: Conn, *, host_ids: Sequence[UUID]) -> list[UUID]:
    """System path: which of these hosts have something for a claim: a queued prediction a ready
    replica of theirs may take, a cancel or a drain not yet told (the WakeHub's question)."""
    rows = await conn.fetch(
        """select distinct j.host_id
             from replicas r join jobs j on j.id = r.job_id
            where j.host_id = any($1::uuid[]) and j.status in ('allocated', 'running') and r.status <> 'stopped'
              and ((r.status = 'ready'
                    and exists (select 1 from predictions p
                                 where p.deployment_id = r.deployment_id and p.version_id = r.version_id
                                   and p.status = 'starting' and p.replica_id is null))
                   or (r.status = 'draining'
                       and (r.drain_sent_at is null or r.drain_sent_at < now() - make_interval(secs => $2)))
                   or exists (select 1 from predictions p
                               where p.replica_id = r.id and p.status = 'processing' and p.cancel_requested
                                 and (p.cancel_sent_at is null
                                      or p.cancel_sent_at < now() - make_interval(secs => $2))))""",
        list(host_ids),
        RESEND_S,
    )
    return [r[0] for r in rows]


async def orphaned(conn: Conn, *, limit: int) -> list[tuple[UUID, UUID]]:
    """System path: (org, job) of live replicas whose job has ended by a path that did not stop them
    (the scheduler's set-based ``allocation_failed``); the sweep stops them."""
    rows = await conn.fetch(
        """select r.organization_id, r.job_id from replicas r join jobs j on j.id = r.job_id
            where r.status <> 'stopped'
              and j.status in ('succeeded', 'failed', 'cancelled', 'timed_out', 'allocation_failed')
            order by r.created_at limit $1""",
        limit,
    )
    return [(r[0], r[1]) for r in rows]
