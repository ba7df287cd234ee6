"""The reaper: work on lost hosts, and the server's double check on silent agents.

* Hosts unreachable for longer than ``host_loss_grace_s`` (database clock, counted from no
  earlier than the end of a control-plane outage, background/liveness.py): their allocated and
  running jobs are requeued as attempt + 1 (``job.requeued``, cause ``host_lost``) if their
  policy allows, else failed (``host_lost``); cancelled if a cancel was pending. Requeues are
  rate-limited per organization (``requeue_rate_per_minute``, counted from the events of the
  last minute) so a control-plane partition cannot stampede the fleet; the rest wait for the
  next pass. When the host comes back, its agent is told to kill the old attempts (fenced).
* A running job whose cancel was requested, or whose max_runtime_s passed, more than
  grace + margin ago without an exit report: the server moves it to cancelled / timed_out itself
  (its GPUs are released); the agent is still told to kill it when it is heard from again.

One pass is one transaction under an advisory lock: replicas take turns, never double-count.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from uuid import UUID

from gpufleet.background import liveness
from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.execution import HOST_LOST, ExecutionPolicy, OutcomeStatus, ReapResult
from gpufleet.domain.jobs import JobStatus
from gpufleet.repo import control_plane
from gpufleet.repo import execution as repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services.reports import end_lost, may_retry, record_server_outcome
from gpufleet.services.transitions import transition_job

log = logging.getLogger(__name__)
ACTOR = "reaper"


async def run_once(db: Database, settings: Settings) -> ReapResult:
    """One pass: lost hosts' work, then silent cancels, then silent timeouts (one transaction each).

    Separate transactions keep each one's host locks in one order (by host), so a pass cannot
    deadlock against the scheduler's commit; each takes the reaper lock, so replicas take turns.
    """
    policy = ExecutionPolicy.from_settings(settings)
    result = ReapResult()
    async with db.system_transaction() as conn:
        resumed_at = await control_plane.observe(conn, outage_gap_s=liveness.outage_gap_s(settings))
    async with db.system_transaction() as conn:
        if not await repo.try_reaper_lock(conn):
            return ReapResult(skipped=True)
        deferred = await _host_loss(conn, policy, result, resumed_at)
    silent = policy.cancel_grace_s + policy.kill_margin_s
    async with db.system_transaction() as conn:
        if await repo.try_reaper_lock(conn):
            for org_id, job_id in await repo.silent_cancels(conn, after_s=silent, limit=policy.reaper_batch):
                why = f"cancelled; the agent did not confirm the process stopped within {silent:.0f} s"
                await _server_ends(conn, org_id, job_id, JobStatus.CANCELLED, why)
                result.cancelled.append(job_id)
    async with db.system_transaction() as conn:
        if await repo.try_reaper_lock(conn):
            for org_id, job_id in await repo.silent_timeouts(conn, after_s=silent, limit=policy.reaper_batch):
                why = "timed out; the agent did not confirm the process stopped"
                await _server_ends(conn, org_id, job_id, JobStatus.TIMED_OUT, why)
                result.timed_out.append(job_id)
    if deferred:
        log.info("reaper: %d host-loss requeues deferred by the rate limit", deferred)
    return ReapResult(result.requeued, result.failed, deferred, result.cancelled, result.timed_out)


async def _host_loss(conn: Conn, policy: ExecutionPolicy, result: ReapResult, resumed_at: datetime | None) -> int:
    """Requeue / fail / cancel the work of lost hosts; the number of requeues deferred."""
    deferred = 0
    lost = await repo.lost_host_jobs(
        conn, grace_s=policy.host_loss_grace_s, limit=policy.reaper_batch, resumed_at=resumed_at
    )
    used = await repo.host_loss_requeues(conn, org_ids=sorted({j.org_id for j in lost}))
    for item in lost:
        job = await jobs_repo.get(conn, org_id=item.org_id, job_id=item.job_id)
        if job is None or job.status not in (JobStatus.ALLOCATED, JobStatus.RUNNING):
            continue
        retry = job.cancel_requested_at is None and may_retry(job, on="host_loss")
        if retry and used.get(item.org_id, 0) >= policy.requeue_rate_per_minute:
            deferred += 1
            continue
        reason = f"{HOST_LOST}: host {item.host_name} unreachable for {item.unreachable_s:.0f} s"
        moved = await end_lost(conn, job, reason=reason, cause=HOST_LOST, actor=ACTOR)
        if moved.status is JobStatus.PENDING:
            used[item.org_id] = used.get(item.org_id, 0) + 1
            result.requeued.append(job.id)
        elif moved.status is JobStatus.CANCELLED:
            result.cancelled.append(job.id)
        else:
            result.failed.append(job.id)
    return deferred


async def _server_ends(conn: Conn, org_id: UUID, job_id: UUID, to: JobStatus, reason: str) -> None:
    job = await jobs_repo.get(conn, org_id=org_id, job_id=job_id)
    assert job is not None  # locked by the query that found it
    await transition_job(conn, job, to, reason=reason, actor=ACTOR, data={"cause": "agent_silent"})
    status: OutcomeStatus = "cancelled" if to is JobStatus.CANCELLED else "timed_out"
    await record_server_outcome(conn, job, status, reason=reason)


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db, settings)

    await run_periodically("reaper", once, interval_s=settings.reaper_interval_s, stop=stop)
