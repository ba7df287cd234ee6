"""When a replica's job ends, whatever ended it: the replica stops and its in-flight predictions end.

Called by ``services.transitions.transition_job`` for every job of kind ``replica`` that reaches a
terminal status (the agent's exit report, a cancel, the reaper's host loss, a silent agent), in the
same transaction; the scheduler's set-based ``allocation_failed`` is caught by the autoscaler's
sweep (``stop_orphan``). Predictions a replica was running FAIL with the reason, never retried,
so none ever runs twice (docs/predictions.md). A crash (an end nobody asked for) counts toward the
deployment's restart backoff.
"""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.jobs import Job, JobStatus
from gpufleet.domain.predictions import BACKOFF_MAX_S, ReplicaStatus
from gpufleet.repo import deployments as deployments_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import prediction_queue as queue
from gpufleet.repo import predictions as predictions_repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.services.prediction_events import predictions_moved, replica_event

ACTOR = "replicas"
CRASHES = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.ALLOCATION_FAILED})


def _why(job: Job) -> str:
    detail = f": {job.status_reason}" if job.status_reason else ""
    if job.status is JobStatus.SUCCEEDED:
        return "the replica stopped"
    return f"the replica running it ended ({job.status.value}{detail})"


async def on_job_ended(conn: Conn, job: Job) -> None:
    """The replica of ``job`` (if any, and still live) is stopped; see the module docstring."""
    org_id = job.organization_id
    before = await replicas_repo.for_job(conn, org_id=org_id, job_id=job.id)
    if before is None or before.status is ReplicaStatus.STOPPED:
        return
    # The lock order of everything that touches replicas: job, deployment, replica, predictions.
    await deployments_repo.get(conn, org_id=org_id, deployment_id=before.deployment_id, lock=True)
    why = _why(job)
    replica = await replicas_repo.stop_for_job(conn, org_id=org_id, job_id=job.id, error=None)
    if replica is None:
        return
    failed = await queue.fail_on_replica(conn, org_id=org_id, replica_id=replica.id, error=why)
    await predictions_moved(conn, failed, actor=ACTOR)
    # A crash: an end nobody asked for (a drained replica exits 0; a cancel is deliberate).
    crashed = job.status in CRASHES and before.status is not ReplicaStatus.DRAINING
    failures = None
    if crashed:
        failures = await deployments_repo.record_failure(
            conn, org_id=org_id, deployment_id=replica.deployment_id, max_backoff_s=BACKOFF_MAX_S
        )
    # No replica of this version will ever get further: fail what waits for it rather than keep it forever.
    hopeless = job.status is JobStatus.ALLOCATION_FAILED or (
        before.status is ReplicaStatus.STARTING and before.error is not None
    )
    if hopeless:
        reason = (
            f"no host can run a replica of this model: {job.status_reason}"
            if job.status is JobStatus.ALLOCATION_FAILED
            else f"the model's setup failed: {before.error}"
        )
        queued = await predictions_repo.fail_queued(
            conn, org_id=org_id, deployment_id=replica.deployment_id, version_id=replica.version_id, error=reason
        )
        await predictions_moved(conn, queued, actor=ACTOR)
    await replica_event(
        conn,
        replica,
        "replica.stopped",
        actor=ACTOR,
        job_status=job.status.value,
        reason=job.status_reason,
        failed_predictions=len(failed),
        crashed=crashed,
        failures=failures,
    )


async def stop_orphan(conn: Conn, org_id: UUID, job_id: UUID) -> bool:
    """The sweep: a live replica whose job already ended. Whether it was stopped here."""
    job = await jobs_repo.get(conn, org_id=org_id, job_id=job_id)
    if job is None:
        return False
    await on_job_ended(conn, job)
    return True
