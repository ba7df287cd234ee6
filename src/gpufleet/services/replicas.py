"""What the agent's model runner reports about a replica: its worker is ready (setup() done), or
its setup failed. Fenced like job reports: the replica's job must be the current attempt on the
reporting host, else ``StaleAttempt`` (409) and nothing changes."""

from __future__ import annotations

import math
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.jobs import JobStatus
from gpufleet.domain.predictions import Replica, ReplicaStatus
from gpufleet.errors import InvalidInput
from gpufleet.repo import deployments as deployments_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import replicas as repo
from gpufleet.services.hosts import ensure_current
from gpufleet.services.prediction_events import replica_event
from gpufleet.services.reports import fence, stale_attempt

MAX_ERROR = 4000


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name} must be a number of seconds >= 0", field=name)
    return float(value)


async def report_state(
    db: Database,
    identity: HostIdentity,
    replica_id: UUID,
    *,
    job_id: UUID,
    attempt: int,
    state: str,
    environment_s: float | None = None,
    environment_cached: bool | None = None,
    setup_s: float | None = None,
    error: str | None = None,
) -> Replica:
    """``ready``: the replica claims predictions from now on (its deployment's crash count resets).
    ``failed``: the error is kept; the agent then reports the job's exit as failed, which fails
    the predictions queued for this version (a setup that fails would fail them all)."""
    if state not in ("ready", "failed"):
        raise InvalidInput("state must be ready or failed", field="state")
    env_s, set_s = _seconds("environment_s", environment_s), _seconds("setup_s", setup_s)
    text = (error or "").replace("\x00", "")[:MAX_ERROR] or None
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)
        job = fence(
            await jobs_repo.get_for_update(conn, org_id=identity.org_id, job_id=job_id), identity, job_id, attempt
        )
        if job.status not in (JobStatus.ALLOCATED, JobStatus.RUNNING):
            raise stale_attempt(job_id, attempt, f"the job is {job.status}", job)
        found = await repo.for_job(conn, org_id=identity.org_id, job_id=job_id)
        if found is None or found.id != replica_id:
            raise stale_attempt(job_id, attempt, f"replica {replica_id} does not run as this job", job)
        await deployments_repo.get(conn, org_id=identity.org_id, deployment_id=found.deployment_id, lock=True)
        actor = identity.actor
        if state == "failed":
            await repo.set_timings(
                conn,
                org_id=identity.org_id,
                replica_id=replica_id,
                environment_s=env_s,
                environment_cached=environment_cached,
                setup_s=set_s,
                error=text or "setup failed",
            )
            await replica_event(conn, found, "replica.failed", actor=actor, error=text or "setup failed")
            failed = await repo.get(conn, org_id=identity.org_id, replica_id=replica_id)
            assert failed is not None
            return failed
        if found.status is not ReplicaStatus.STARTING:
            return found  # a resend, or drained while it started: nothing to change
        ready = await repo.set_ready(
            conn,
            org_id=identity.org_id,
            replica_id=replica_id,
            slots=found.slots,
            environment_s=env_s,
            environment_cached=environment_cached,
            setup_s=set_s,
        )
        assert ready is not None  # locked by the job lock order; it was starting
        await deployments_repo.reset_failures(conn, org_id=identity.org_id, deployment_id=found.deployment_id)
        await replica_event(
            conn,
            ready,
            "replica.ready",
            actor=actor,
            environment_s=env_s,
            environment_cached=environment_cached,
            setup_s=set_s,
        )
        return ready
