"""Heartbeats: liveness by the database clock, inventory, GPU health, the truth check and samples.

A steady heartbeat is three round trips whatever its size, in one tenant transaction: the
tenant settings, then one statement that stamps the host (locks it, so one host's heartbeats
serialise), stores every sample (``unnest``) and reads the host's GPUs, then COMMIT. Only a
report that changes a GPU costs more: the GPUs are re-read locked, the changes written, and
the samples of GPUs it added inserted. A report that fails validation changes nothing.
"""

from __future__ import annotations

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HeartbeatPolicy, HeartbeatReport, HeartbeatResult, HostIdentity
from gpufleet.errors import Unauthorized
from gpufleet.repo import events
from gpufleet.repo import gpus as gpus_repo
from gpufleet.repo import heartbeats as heartbeats_repo
from gpufleet.services import inventory
from gpufleet.services.hosts import write_plan

DEFAULT_POLICY = HeartbeatPolicy()


async def heartbeat(
    db: Database, identity: HostIdentity, report: HeartbeatReport, *, policy: HeartbeatPolicy = DEFAULT_POLICY
) -> HeartbeatResult:
    """Record one heartbeat of an authenticated host (``authenticate_host``).

    Raises ``InvalidInput`` (naming the field) for a malformed or oversized report and
    ``Unauthorized`` when the host was revoked since it authenticated; nothing is written then.
    """
    if report.facts is not None:
        inventory.validate_facts(report.facts)
    inventory.validate_gpus(report.gpus, policy)
    series = report.sample_series()
    span = inventory.validate_series(series, policy)
    org_id, host_id = identity.org_id, identity.host_id
    actor = identity.actor
    async with db.flat_transaction(org_id) as conn:  # no savepoint machinery on the hot path
        stamped = await heartbeats_repo.stamp(
            conn,
            org_id=org_id,
            host_id=host_id,
            facts=report.facts,
            credential_hash=identity.credential_hash,
            series=series,
            span=span,
            max_skew_s=policy.max_clock_skew_s,
        )
        if stamped is None:
            raise Unauthorized("host credential revoked; register the host again with a join token")
        beat, rows = stamped.beat, stamped.gpus
        inventory.check_sample_times(series, span, beat.now, policy)
        if stamped.raced:  # a concurrent heartbeat's GPU changes are not in the statement's snapshot
            rows = await gpus_repo.for_host(conn, org_id=org_id, host_id=host_id)
        plan = inventory.plan(rows, report.gpus, series, policy, seen_at=beat.previous_beat)
        if not plan.empty:
            # Something changes: decide again on locked rows, so an allocation or an admin's
            # change that landed since the first read is not overwritten.
            rows = await gpus_repo.for_host(conn, org_id=org_id, host_id=host_id, for_update=True)
            plan = inventory.plan(rows, report.gpus, series, policy, seen_at=beat.previous_beat)
            await write_plan(conn, org_id=org_id, host_id=host_id, plan=plan, actor=actor)
        if not plan.empty or stamped.raced or not stamped.samples_stored:
            # The samples of GPUs that were not there when the statement began (those stored are skipped).
            await heartbeats_repo.insert_samples(conn, org_id=org_id, host_id=host_id, series=series)
        if beat.status is not beat.old_status:
            await events.append(
                conn,
                org_id,
                "host",
                host_id,
                f"host.{beat.status.value}",
                {"from": beat.old_status.value, "to": beat.status.value, "reason": "heartbeat received"},
                actor=actor,
            )
    return HeartbeatResult(
        host_status=beat.status,
        server_time=beat.now,
        samples_received=sum(len(one.ts) for one in series),
        gpus_added=len(plan.new),
        gpus_changed=len(plan.changed),
        next_heartbeat_s=policy.interval_s,
    )
