"""The autoscaler loop: each pass stops replicas whose job ended unnoticed, then looks at every
deployment with replicas, queued predictions or a minimum, and applies ``services.autoscale.decide``.

Safe on every server replica at once: each deployment is handled in its own transaction holding
its row lock (``FOR NO KEY UPDATE SKIP LOCKED``), so two passes never act on one deployment
together, and a pass skips a deployment a cold start is busy with (the next pass sees it).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from uuid import UUID

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.predictions import Deployment
from gpufleet.errors import BudgetExceeded
from gpufleet.repo import deployments as deployments_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import models as models_repo
from gpufleet.repo import predictions as predictions_repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.services import deployments
from gpufleet.services.autoscale import Queue, ReplicaLoad, ScaleInput, decide
from gpufleet.services.models import owner_slug
from gpufleet.services.replica_end import stop_orphan

log = logging.getLogger(__name__)
ACTOR = "autoscaler"


@dataclass
class AutoscaleReport:
    started: list[UUID] = field(default_factory=list)  # replica ids
    drained: list[UUID] = field(default_factory=list)
    stopped: list[UUID] = field(default_factory=list)  # jobs whose replica the sweep stopped
    skipped: int = 0  # deployments another transaction held
    refused: int = 0  # starts a hard budget refused


async def run_once(db: Database, settings: Settings) -> AutoscaleReport:
    report = AutoscaleReport()
    async with db.system_transaction() as conn:
        orphans = await replicas_repo.orphaned(conn, limit=settings.autoscaler_batch_size)
    for org_id, job_id in orphans:
        async with db.transaction(org_id) as conn:
            await jobs_repo.get_for_update(conn, org_id=org_id, job_id=job_id)  # the lock order: job first
            if await stop_orphan(conn, org_id, job_id):
                report.stopped.append(job_id)
    async with db.system_transaction() as conn:
        targets = await deployments_repo.needing_attention(conn, limit=settings.autoscaler_batch_size)
    for org_id, deployment_id in targets:
        await tick(db, org_id, deployment_id, report, scale_up_after_s=settings.autoscaler_scale_up_after_s)
    return report


async def tick(
    db: Database, org_id: UUID, deployment_id: UUID, report: AutoscaleReport, *, scale_up_after_s: float = 1.0
) -> None:
    """One deployment: follow its model's latest version (a model's own), then start and drain."""
    async with db.transaction(org_id) as conn:
        if not await deployments_repo.try_lock(conn, org_id=org_id, deployment_id=deployment_id):
            report.skipped += 1
            return
        d = await deployments_repo.get(conn, org_id=org_id, deployment_id=deployment_id)
        if d is None:
            return
        if d.implicit:
            d = await _follow_latest(conn, d)
        live = await replicas_repo.of_deployment(conn, org_id=org_id, deployment_id=d.id)
        stats = await predictions_repo.queue_stats(conn, org_id=org_id, deployment_id=d.id)
        decision = decide(
            ScaleInput(
                version_id=d.version_id,
                release=d.release,
                min_replicas=d.min_replicas,
                max_replicas=d.max_replicas,
                idle_timeout_s=d.idle_timeout_s,
                concurrency=d.concurrency,
                replicas=tuple(
                    ReplicaLoad(r.id, r.version_id, r.release, r.status, r.in_flight, r.idle_s) for r in live
                ),
                queues={v: Queue(n, age) for v, (n, age) in stats.items()},
                backing_off=await deployments_repo.backing_off(conn, org_id=org_id, deployment_id=d.id),
            ),
            scale_up_after_s=scale_up_after_s,
        )
        if decision.idle:
            return
        log.info("autoscaler: %s: %s", d.name, "; ".join(decision.reasons))
        owner = await owner_slug(conn, org_id)
        for version_id in decision.start:
            version = await models_repo.get_version(conn, org_id=org_id, version_id=version_id)
            if version is None:
                continue
            try:
                async with conn.transaction():  # a refusal undoes only this start
                    replica = await deployments.start_replica(conn, d, version, owner=owner, actor=ACTOR)
            except BudgetExceeded as exc:
                report.refused += 1
                log.warning("autoscaler: %s: a budget refused a replica: %s", d.name, exc.message)
                break
            report.started.append(replica.id)
        to_drain = [r for r in live if r.id in set(decision.drain)]
        report.drained += await deployments.drain(conn, to_drain, actor=ACTOR, reason="; ".join(decision.reasons))


async def _follow_latest(conn: Conn, d: Deployment) -> Deployment:
    """A model's own deployment runs its latest version: a newer push is a new release (rolled out)."""
    model = await models_repo.get_model_by_id(conn, org_id=d.organization_id, model_id=d.model_id)
    if model is None or model.latest_version_id in (None, d.version_id):
        return d
    latest = await models_repo.get_version(conn, org_id=d.organization_id, version_id=model.latest_version_id)
    if latest is None:
        return d
    return await deployments.implicit_for(conn, d.organization_id, model, latest)


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db, settings)

    await run_periodically("autoscaler", once, interval_s=settings.autoscaler_interval_s, stop=stop)
