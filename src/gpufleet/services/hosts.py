"""Hosts: registration with a join token, credential authentication, and admin operations.

Registration runs on the system path (the organization is known only once the token is
spent); everything after it runs in the host's organization. Status changes follow
``states.HOST_TRANSITIONS`` / ``GPU_TRANSITIONS``, are guarded again in SQL, and write their
event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

import asyncpg

from gpufleet import security, states
from gpufleet.db.pool import Connection, Database
from gpufleet.domain.hosts import (
    HOST_REMOVED,
    GpuDetail,
    GpuStatus,
    HeartbeatPolicy,
    HostDetail,
    HostFacts,
    HostIdentity,
    HostStatus,
    Registration,
    ReportedGpu,
)
from gpufleet.domain.tenancy import TenantContext, host_actor
from gpufleet.errors import Conflict, InvalidInput, InvalidTransition, NotFound, Unauthorized
from gpufleet.repo import events
from gpufleet.repo import gpus as gpus_repo
from gpufleet.repo import hosts as repo
from gpufleet.services import inventory, join_tokens
from gpufleet.services.auth import secret_hash
from gpufleet.services.lookup import found


async def write_plan(
    conn: Connection, *, org_id: UUID, host_id: UUID, plan: inventory.Plan, actor: str | None
) -> list[GpuDetail]:
    """Apply an inventory plan (inserts, guarded updates, events); the inserted GPUs."""
    inserted = await gpus_repo.insert(conn, org_id=org_id, host_id=host_id, gpus=plan.new)
    written = await gpus_repo.apply(conn, org_id=org_id, host_id=host_id, gpus=plan.changed)
    if written != len(plan.changed):
        raise Conflict("a GPU of this host changed while the report was applied; send it again")
    if plan.events:
        ids = {g.uuid: g.id for g in (*plan.changed, *inserted)}
        new_uuids = {g.uuid for g in plan.new} - {g.uuid for g in inserted}  # inserted by a racing writer
        await events.append_many(
            conn,
            [(org_id, "gpu", ids[u], t, d) for u, t, d in plan.events if u not in new_uuids],
            actor=actor,
        )
    return inserted


def _validate_labels(labels: dict[str, str]) -> None:
    if len(labels) > 64:
        raise InvalidInput("labels: at most 64 labels", field="labels")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not 0 < len(k) <= 63 or len(v) > 200:
            raise InvalidInput(f"labels.{k}: keys are 1-63 characters, values at most 200", field=f"labels.{k}")


async def register_host(
    db: Database,
    join_token: str,
    facts: HostFacts,
    gpus: Sequence[ReportedGpu],
    labels: dict[str, str] | None = None,
    name: str | None = None,
    *,
    policy: HeartbeatPolicy | None = None,
) -> Registration:
    """Register a host with a join token: all of it in one transaction, or nothing.

    The host lands in the token's organization under ``name`` (default: its hostname). A live
    host of that name is a ``Conflict``; a host of that name whose credential was revoked is
    re-registered in place (new credential, same id, GPUs and history). The credential is in
    the result and nowhere else.
    """
    policy = policy or HeartbeatPolicy()
    labels = dict(labels or {})
    name = name if name is not None else facts.hostname
    inventory.validate_facts(facts)
    inventory.validate_gpus(gpus, policy)
    _validate_labels(labels)
    if not name or len(name) > 253 or not name.isprintable():
        raise InvalidInput("name must be printable text of 1 to 253 characters", field="name")
    credential = security.issue(security.HOST_CREDENTIAL)
    actor = host_actor(name)
    try:
        async with db.system_transaction() as conn:
            token = await join_tokens.consume(conn, join_token)
            org_id = token.organization_id
            existing = await repo.get_live_by_name_for_update(conn, org_id=org_id, name=name)
            if existing is not None and existing.revoked_at is None:
                raise Conflict(
                    f"a host named {name!r} is already registered in this organization; remove it first "
                    "or register this machine under another name"
                )
            enrollment = repo.Enrollment(facts, labels, credential.display_prefix, credential.hash, token.id)
            if existing is None:
                host = await repo.insert(conn, org_id=org_id, name=name, enrollment=enrollment)
                rows: list[GpuDetail] = []
            else:
                host = await repo.reregister(conn, org_id=org_id, host_id=existing.id, enrollment=enrollment)
                rows = await gpus_repo.for_host(conn, org_id=org_id, host_id=host.id, for_update=True)
            plan = inventory.plan(rows, gpus, (), policy, seen_at=existing.last_heartbeat_at if existing else None)
            await write_plan(conn, org_id=org_id, host_id=host.id, plan=plan, actor=actor)
            await events.append(
                conn,
                org_id,
                "host",
                host.id,
                "host.registered",
                {
                    "name": name,
                    "join_token_id": str(token.id),
                    "gpus": len(gpus),
                    "simulated": facts.simulated,
                    "reregistered": existing is not None,
                },
                actor=actor,
            )
            final = await gpus_repo.for_host(conn, org_id=org_id, host_id=host.id)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"a host named {name!r} was registered meanwhile; register under another name") from exc
    return Registration(host, credential.secret, final, reregistered=existing is not None)


def credential_hash(credential: str) -> bytes:
    """The hash a host credential is stored under; ``Unauthorized`` for a malformed one (no lookup)."""
    return secret_hash(credential, security.HOST_CREDENTIAL, "malformed host credential")


async def authenticate_host(db: Database, credential: str) -> HostIdentity:
    """The host a credential belongs to; ``Unauthorized`` for malformed, unknown or revoked ones."""
    return await host_of_credential(db, credential_hash(credential))


async def host_of_credential(db: Database, hashed: bytes) -> HostIdentity:
    """The host of a well-formed credential by its hash (``credential_hash``); ``Unauthorized`` for
    an unknown or revoked one."""
    async with db.system_transaction() as conn:
        match = await repo.find_by_credential(conn, credential_hash=hashed)
    if match is None:
        raise Unauthorized("unknown host credential (never issued, or replaced when its host registered again)")
    if match.removed:
        raise Unauthorized("host credential revoked: the host was removed; register it again with a join token")
    if match.revoked:
        raise Unauthorized("host credential revoked; register the host again with a join token")
    return replace(match.identity, credential_hash=hashed)


async def ensure_current(conn: Connection, identity: HostIdentity) -> None:
    """Inside an agent call's own transaction: refuse a credential revoked or replaced since it
    was verified (the identity may come from a replica's cache, see services/host_auth.py).

    Every agent call runs it (the heartbeat folds the same test into its host UPDATE), so a
    revocation or re-registration is final at once on every replica, whatever the caches hold.
    """
    held = await repo.holds_credential(
        conn, org_id=identity.org_id, host_id=identity.host_id, credential_hash=identity.credential_hash
    )
    if not held:
        raise Unauthorized("host credential revoked or replaced; register the host again with a join token")


async def get_host(db: Database, ctx: TenantContext, *, host_id: UUID) -> HostDetail:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        host = found(await repo.get(conn, org_id=org_id, host_id=host_id), f"host {host_id}")
    return host


async def get_gpu(db: Database, ctx: TenantContext, *, gpu_id: UUID) -> GpuDetail:
    async with db.transaction(ctx.org_id) as conn:
        gpu = found(await gpus_repo.get(conn, org_id=ctx.org_id, gpu_id=gpu_id), f"GPU {gpu_id}")
    return gpu


async def _locked(conn: Connection, org_id: UUID, host_id: UUID) -> HostDetail:
    """The host, its row locked; NotFound when there is none or it was removed."""
    host = await repo.get(conn, org_id=org_id, host_id=host_id, for_update=True)
    if host is None or host.removed_at is not None:
        raise NotFound(f"host {host_id} not found")
    return host


async def _host_transition(
    db: Database,
    ctx: TenantContext,
    *,
    host_id: UUID,
    to: HostStatus,
    only_from: frozenset[HostStatus] | None,
    reason: str | None,
) -> HostDetail:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        host = await _locked(conn, org_id, host_id)
        if host.status is to:
            return host  # already there: nothing to record
        allowed = states.sources(states.HOST_TRANSITIONS, to)
        if only_from is not None:
            allowed = [s for s in allowed if s in only_from]
        if host.status not in allowed:
            raise InvalidTransition(f"host {host.name} is {host.status}; it cannot go to {to} this way")
        moved = await repo.transition(conn, org_id=org_id, host_id=host_id, allowed_from=allowed, to=to, reason=reason)
        if moved is None:
            raise InvalidTransition(f"host {host.name} changed meanwhile; try again")
        await events.record(
            conn,
            ctx,
            "host",
            host_id,
            f"host.{to.value}",
            {"from": host.status.value, "to": to.value, "reason": reason},
        )
        return moved


async def drain_host(db: Database, ctx: TenantContext, *, host_id: UUID, reason: str | None = None) -> HostDetail:
    """No new work on the host; what runs there finishes."""
    return await _host_transition(db, ctx, host_id=host_id, to=HostStatus.DRAINING, only_from=None, reason=reason)


async def undrain_host(db: Database, ctx: TenantContext, *, host_id: UUID) -> HostDetail:
    """A draining host takes new work again."""
    return await _host_transition(
        db, ctx, host_id=host_id, to=HostStatus.READY, only_from=frozenset({HostStatus.DRAINING}), reason=None
    )


async def start_host_maintenance(
    db: Database, ctx: TenantContext, *, host_id: UUID, reason: str | None = None
) -> HostDetail:
    """Out of service for an admin; the liveness sweep leaves it alone."""
    return await _host_transition(db, ctx, host_id=host_id, to=HostStatus.MAINTENANCE, only_from=None, reason=reason)


async def end_host_maintenance(db: Database, ctx: TenantContext, *, host_id: UUID) -> HostDetail:
    """Back to ready (the liveness sweep marks it unreachable if its agent is silent)."""
    return await _host_transition(
        db, ctx, host_id=host_id, to=HostStatus.READY, only_from=frozenset({HostStatus.MAINTENANCE}), reason=None
    )


async def revoke_host(db: Database, ctx: TenantContext, *, host_id: UUID) -> HostDetail:
    """Its credential stops working at once; the host can register again with a join token."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        before = await _locked(conn, org_id, host_id)
        host = await repo.revoke(conn, org_id=org_id, host_id=host_id)
        assert host is not None
        if before.revoked_at is None:
            await events.record(conn, ctx, "host", host_id, "host.revoked", {"name": host.name})
        return host


async def remove_host(db: Database, ctx: TenantContext, *, host_id: UUID) -> HostDetail:
    """Retire a host: revoked, its GPUs offline, its name free; history (jobs, costs, metrics) stays.

    Refused while jobs are allocated or running there: drain it and let them finish (or cancel
    them) first. The host row is locked first, so no job can be placed on it meanwhile.
    """
    org_id, actor = ctx.org_id, ctx.actor
    async with db.transaction(org_id) as conn:
        host = await _locked(conn, org_id, host_id)
        jobs, allocations = await repo.active_work(conn, org_id=org_id, host_id=host_id)
        if jobs or allocations:
            raise Conflict(
                f"host {host.name} still has {jobs} allocated or running job{'s' if jobs != 1 else ''} "
                f"({allocations} active GPU allocation{'s' if allocations != 1 else ''}); drain it and wait for "
                "them to finish, or cancel them, before removing it"
            )
        removed = await repo.revoke(conn, org_id=org_id, host_id=host_id, remove=True)
        assert removed is not None
        offline = await gpus_repo.take_offline(conn, org_id=org_id, host_id=host_id, reason=HOST_REMOVED)
        await events.append_many(
            conn,
            [(org_id, "gpu", g.id, "gpu.offline", {"to": "offline", "reason": HOST_REMOVED}) for g in offline],
            actor=actor,
        )
        await events.record(conn, ctx, "host", host_id, "host.removed", {"name": host.name, "gpus": len(offline)})
        return removed


async def _gpu_transition(
    conn: Connection, ctx: TenantContext, gpu: GpuDetail, to: GpuStatus, *, reason: str | None
) -> GpuDetail:
    states.check(states.GPU_TRANSITIONS, gpu.status, to, entity="GPU")
    moved = await gpus_repo.transition(
        conn,
        org_id=gpu.organization_id,
        gpu_id=gpu.id,
        allowed_from=states.sources(states.GPU_TRANSITIONS, to),
        to=to,
        reason=reason,
    )
    if moved is None:
        raise InvalidTransition(f"GPU {gpu.uuid} changed meanwhile; try again")
    await events.record(
        conn, ctx, "gpu", gpu.id, f"gpu.{to.value}", {"from": gpu.status.value, "to": to.value, "reason": reason}
    )
    return moved


async def set_gpu_maintenance(
    db: Database, ctx: TenantContext, *, gpu_id: UUID, on: bool, reason: str | None = None
) -> GpuDetail:
    """Take a GPU out of service (``on``) or put it back; running work on it is not touched."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        gpu = found(await gpus_repo.get(conn, org_id=org_id, gpu_id=gpu_id, for_update=True), f"GPU {gpu_id}")
        if on:
            if gpu.status is GpuStatus.MAINTENANCE:
                return gpu
            return await _gpu_transition(conn, ctx, gpu, GpuStatus.MAINTENANCE, reason=reason)
        if gpu.status is not GpuStatus.MAINTENANCE:
            raise InvalidTransition(f"GPU {gpu.uuid} is {gpu.status}, not in maintenance")
        back = GpuStatus.ALLOCATED if gpu.allocated_milli > 0 else GpuStatus.AVAILABLE
        return await _gpu_transition(conn, ctx, gpu, back, reason=None)


async def clear_gpu_health(db: Database, ctx: TenantContext, *, gpu_id: UUID) -> GpuDetail:
    """An admin declares an unhealthy GPU fit again (the only way back from ``unhealthy``).

    If the cause persists (uncorrected ECC errors stay counted until the driver reloads, a GPU
    still too hot), the next heartbeat marks it unhealthy again.
    """
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        gpu = found(await gpus_repo.get(conn, org_id=org_id, gpu_id=gpu_id, for_update=True), f"GPU {gpu_id}")
        if gpu.status is not GpuStatus.UNHEALTHY:
            raise InvalidTransition(f"GPU {gpu.uuid} is {gpu.status}, not unhealthy")
        back = GpuStatus.ALLOCATED if gpu.allocated_milli > 0 else GpuStatus.AVAILABLE
        return await _gpu_transition(conn, ctx, gpu, back, reason=None)
