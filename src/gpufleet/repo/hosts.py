"""Hosts: registration, credentials, heartbeats, liveness, admin status changes, and the fleet at a
glance (every live host with its GPUs and their latest samples, for the dashboard).

Functions that run before the tenant is known (credential lookup) or across every tenant (the
liveness sweep) say so; they are called only inside ``Database.system_transaction()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.hosts import FleetGpu, FleetHost, GpuStatus, HostDetail, HostFacts, HostIdentity, HostStatus
from gpufleet.repo import keyset
from gpufleet.repo.rows import Table, mapper

host_row = mapper(HostDetail, status=HostStatus)  # also read by tests/factories.py and bench/row_mapping.py
_hosts = Table("hosts", host_row)
_fleet_gpu = mapper(FleetGpu, status=GpuStatus)


def facts_params(facts: HostFacts) -> list[Any]:
    """The host facts as parameters, in the order of ``facts_set`` (repo/heartbeats.py uses both too)."""
    return [
        facts.hostname,
        facts.os,
        facts.kernel,
        facts.arch,
        facts.cpu_cores,
        facts.ram_mb,
        facts.driver_version,
        facts.cuda_version,
        facts.agent_version,
    ]


# $N..$N+8 in the order of facts_params(); the capacity columns never drop below what is allocated,
# so a host reporting less RAM than its jobs hold cannot break the ledger's CHECKs.
def facts_set(n: int) -> str:
    return f"""hostname = ${n}, os = ${n + 1}, kernel = ${n + 2}, arch = ${n + 3},
               cpu_cores = greatest(${n + 4}::int, ceil(cpu_milli_allocated / 1000.0)::int),
               ram_mb = greatest(${n + 5}::bigint, ram_mb_allocated),
               driver_version = ${n + 6}, cuda_version = ${n + 7}, agent_version = ${n + 8}"""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What a registration writes on its host: the agent's facts and labels, the new credential and
    the join token that admitted it (a first registration and a revoked host's return alike)."""

    facts: HostFacts
    labels: dict[str, str]
    credential_prefix: str
    credential_hash: bytes
    join_token_id: UUID | None

    def params(self) -> list[Any]:
        """$3..$16 of ``insert`` and ``reregister``: the credential, token, labels, then the facts."""
        credential = [self.credential_prefix, self.credential_hash, self.join_token_id]
        return [*credential, self.labels, self.facts.simulated, *facts_params(self.facts)]


async def insert(conn: Conn, *, org_id: UUID, name: str, enrollment: Enrollment) -> HostDetail:
    row = await conn.fetchrow(
        """insert into hosts (organization_id, name, credential_prefix, credential_hash, join_token_id, labels,
                              simulated, last_heartbeat_at, hostname, os, kernel, arch, cpu_cores, ram_mb,
                              driver_version, cuda_version, agent_version)
           values ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9, $10, $11, $12, $13, $14, $15, $16)
        returning *""",
        org_id,
        name,
        *enrollment.params(),
    )
    assert row is not None
    return host_row(row)


async def get_live_by_name_for_update(conn: Conn, *, org_id: UUID, name: str) -> HostDetail | None:
    """The organization's host of that name that has not been removed, locked."""
    row = await conn.fetchrow(
        "select * from hosts where organization_id = $1 and name = $2 and removed_at is null for update",
        org_id,
        name,
    )
    return host_row(row) if row else None


async def reregister(conn: Conn, *, org_id: UUID, host_id: UUID, enrollment: Enrollment) -> HostDetail:
    """A revoked host comes back with a new credential; an admin's drain or maintenance stays."""
    row = await conn.fetchrow(
        f"""update hosts set revoked_at = null, credential_prefix = $3, credential_hash = $4, join_token_id = $5,
                   labels = $6, simulated = $7, registered_at = now(), last_heartbeat_at = now(),
                   status = case when status = 'unreachable' then coalesce(status_before_unreachable, 'ready')
                                 else status end,
                   status_before_unreachable = null,
                   status_reason = case when status = 'unreachable' then null else status_reason end,
                   {facts_set(8)}
             where organization_id = $1 and id = $2 and removed_at is null
         returning *""",
        org_id,
        host_id,
        *enrollment.params(),
    )
    assert row is not None
    return host_row(row)


@dataclass(frozen=True, slots=True)
class CredentialMatch:
    identity: HostIdentity
    revoked: bool
    removed: bool


async def find_by_credential(conn: Conn, *, credential_hash: bytes) -> CredentialMatch | None:
    """System path: the host holding this credential (revoked ones included, to say so)."""
    row = await conn.fetchrow(
        """select id, organization_id, name, simulated, revoked_at, removed_at
             from hosts where credential_hash = $1""",
        credential_hash,
    )
    if row is None:
        return None
    identity = HostIdentity(row["id"], row["organization_id"], row["name"], row["simulated"])
    return CredentialMatch(identity, row["revoked_at"] is not None, row["removed_at"] is not None)


async def holds_credential(conn: Conn, *, org_id: UUID, host_id: UUID, credential_hash: bytes | None) -> bool:
    """Whether the host is not revoked and ``credential_hash`` (when given) is still its credential.

    A plain read, no lock: a report that reads "yes" and commits is ordered before a revocation
    that commits later; nothing that starts after the revocation committed reads "yes".
    """
    return bool(
        await conn.fetchval(
            """select exists (select 1 from hosts
                               where organization_id = $1 and id = $2 and revoked_at is null
                                 and ($3::bytea is null or credential_hash = $3))""",
            org_id,
            host_id,
            credential_hash,
        )
    )


async def get(conn: Conn, *, org_id: UUID, host_id: UUID, for_update: bool = False) -> HostDetail | None:
    return await _hosts.get(conn, org_id, host_id, lock="update" if for_update else None)


# The hosts a list shows: $2 a status or null, $3 whether removed hosts count.
_LISTED = "organization_id = $1 and ($2::text is null or status = $2) and ($3 or removed_at is null)"


async def transition(
    conn: Conn,
    *,
    org_id: UUID,
    host_id: UUID,
    allowed_from: Sequence[HostStatus],
    to: HostStatus,
    reason: str | None,
) -> HostDetail | None:
    """Move a live host to ``to`` only from ``allowed_from``; ``None`` when it was not."""
    row = await conn.fetchrow(
        """update hosts set status = $4, status_reason = $5, status_before_unreachable = null
            where organization_id = $1 and id = $2 and status = any($3::text[]) and removed_at is null
        returning *""",
        org_id,
        host_id,
        [s.value for s in allowed_from],
        to.value,
        reason,
    )
    return host_row(row) if row else None


async def revoke(conn: Conn, *, org_id: UUID, host_id: UUID, remove: bool = False) -> HostDetail | None:
    """Revoke the credential (its hash stays so the agent hears "revoked", never "unknown")."""
    row = await conn.fetchrow(
        """update hosts set revoked_at = coalesce(revoked_at, now()),
                            removed_at = case when $3 then now() else removed_at end
            where organization_id = $1 and id = $2 and removed_at is null
        returning *""",
        org_id,
        host_id,
        remove,
    )
    return host_row(row) if row else None


async def active_work(conn: Conn, *, org_id: UUID, host_id: UUID) -> tuple[int, int]:
    """(jobs allocated or running on the host, allocations not yet released on its GPUs)."""
    row = await conn.fetchrow(
        """select (select count(*) from jobs where organization_id = $1 and host_id = $2
                      and status in ('allocated', 'running')) as jobs,
                  (select count(*) from allocations where organization_id = $1 and host_id = $2
                      and released_at is null) as allocations""",
        org_id,
        host_id,
    )
    assert row is not None
    return int(row["jobs"]), int(row["allocations"])


@dataclass(frozen=True, slots=True)
class LostHost:
    org_id: UUID
    host_id: UUID
    name: str
    from_status: HostStatus
    last_heartbeat_at: datetime | None
    silent_s: float


async def mark_unreachable(
    conn: Conn, *, timeout_s: float, from_statuses: Sequence[HostStatus], resumed_at: datetime | None = None
) -> list[LostHost]:
    """System path, every tenant: hosts silent for longer than ``timeout_s`` by the database clock.

    Silence before ``resumed_at`` (the end of a control-plane outage, repo/control_plane.py) does
    not count: until ``timeout_s`` after it, no host is judged. Hosts locked by a heartbeat in
    flight are skipped (they are alive); the next sweep sees them.
    """
    rows = await conn.fetch(
        """with stale as (
               select id from hosts
                where status = any($2::text[]) and removed_at is null
                  and ($3::timestamptz is null or $3 < now() - make_interval(secs => $1))
                  and (last_heartbeat_at < now() - make_interval(secs => $1)
                       or (last_heartbeat_at is null and registered_at < now() - make_interval(secs => $1)))
                for update skip locked)
           update hosts h
              set status = 'unreachable', status_before_unreachable = h.status,
                  status_reason = format('no heartbeat for %s s', $1::float8)
             from stale where h.id = stale.id
        returning h.organization_id, h.id, h.name, h.status_before_unreachable, h.last_heartbeat_at,
                  extract(epoch from now() - coalesce(h.last_heartbeat_at, h.registered_at))::float8 as silent_s""",
        timeout_s,
        [s.value for s in from_statuses],
        resumed_at,
    )
    return [
        LostHost(
            r["organization_id"],
            r["id"],
            r["name"],
            HostStatus(r["status_before_unreachable"]),
            r["last_heartbeat_at"],
            r["silent_s"],
        )
        for r in rows
    ]


async def count_by_status(conn: Conn, *, org_id: UUID) -> dict[str, int]:
    rows = await conn.fetch(
        "select status, count(*) as n from hosts where organization_id = $1 and removed_at is null group by status",
        org_id,
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def page(
    conn: Conn,
    *,
    org_id: UUID,
    limit: int,
    after: tuple[str, UUID] | None = None,
    status: HostStatus | None = None,
    include_removed: bool = False,
) -> list[HostDetail]:
    """By (name, id): ``limit + 1`` hosts at most past ``after`` (``keyset.page``)."""
    rows = await keyset.page(
        conn,
        f"select * from hosts where {_LISTED}",
        org_id,
        status.value if status else None,
        include_removed,
        after=after,
        limit=limit,
        key=("name", "id"),
        types=("text", "uuid"),
        ascending=True,
    )
    return [host_row(r) for r in rows]


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
                  g.allocated_milli, g.foreign_usage, m.ts as sampled_at, m.utilization_pct::float8 as utilization_pct,
                  m.memory_used_mb::float8 as memory_used_mb, m.temperature_c::float8 as temperature_c,
                  m.power_w::float8 as power_w
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
        by_host.setdefault(r["host_id"], []).append(_fleet_gpu(r))
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
