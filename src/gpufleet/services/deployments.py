"""Deployments as use cases: create, update (a new version or hardware is a new release), read,
list, delete; and the two moves the autoscaler and cold starts make: start a replica, drain some.

A replica is a job of kind ``replica`` inserted like any submitted job (validated, budget-admitted,
``job.submitted``), so the scheduler places it under the organization's quotas and budgets, costs
accrue on its allocation, and the agent fences it like any job. Its row in ``replicas`` holds
what the model runner reports. Lock order everywhere: job, deployment, replica, predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.jobs import JobSpec, JobStatus
from gpufleet.domain.models import Hardware, ModelRecord, VersionRecord, check_name
from gpufleet.domain.predictions import Deployment, DeploymentView, Replica, ReplicaStatus
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Conflict, InvalidInput, NotFound
from gpufleet.repo import deployments as repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import models as models_repo
from gpufleet.repo import prediction_queue as queue
from gpufleet.repo import predictions as predictions_repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.services import budgets, costs
from gpufleet.services import jobs as jobs_service
from gpufleet.services.job_spec import validate
from gpufleet.services.lookup import found
from gpufleet.services.models import named_model, owner_slug
from gpufleet.services.prediction_events import deployment_event, predictions_moved, replica_event
from gpufleet.services.transitions import transition_job

IMPLICIT_PREFIX = "model."  # the name of a model's own deployment: model.<model name>
RUNNER_COMMAND = "gpufleet-model-runner"  # descriptive: the agent runs its Model Runner for kind 'replica'


@dataclass(frozen=True, slots=True)
class Scaling:
    min_replicas: int | None = None
    max_replicas: int | None = None
    idle_timeout_s: int | None = None


async def named(conn: Conn, org_id: UUID, slug: str, owner: str, name: str) -> Deployment:
    """The deployment ``owner/name`` of the organization whose slug is ``slug``; NotFound when
    ``owner`` is another organization or it has no such deployment."""
    d = await repo.get_by_name(conn, org_id=org_id, name=name) if owner == slug else None
    return found(d, f"deployment {owner}/{name}")


def _check_scaling(lo: int, hi: int, idle: int) -> None:
    if not 0 <= lo <= 100:
        raise InvalidInput("min_instances: from 0 to 100", field="min_instances")
    if not 1 <= hi <= 100:
        raise InvalidInput("max_instances: from 1 to 100", field="max_instances")
    if lo > hi:
        raise InvalidInput(f"min_instances ({lo}) is above max_instances ({hi})", field="min_instances")
    if not 1 <= idle <= 86400:
        raise InvalidInput("idle_timeout_s: from 1 to 86400 seconds", field="idle_timeout_s")


def replica_spec(d: Deployment, owner: str, digest: str, hardware: Hardware | None = None) -> JobSpec:
    """The job a replica of ``d`` runs as: no max runtime, never retried (its predictions are not)."""
    hw = hardware or d.hardware
    return validate(
        JobSpec(
            name=f"replica:{d.name}",
            command=[RUNNER_COMMAND, f"{owner}/{d.model_name}", digest],
            labels={"gpufleet/deployment": d.name, "gpufleet/release": str(d.release)},
            gpu=hw.gpu,
            cpu_milli=hw.cpu_milli,
            ram_mb=hw.ram_mb,
            max_runtime_s=None,
            retry_on_host_loss=False,
            retry_on_failure=False,
            max_attempts=1,
        )
    )


async def _model(conn: Conn, org_id: UUID, slug: str, ref: str) -> ModelRecord:
    owner, _, name = ref.partition("/")
    if not name or "/" in name:
        raise InvalidInput(f"model: {ref!r} is not OWNER/NAME", field="model")
    return await named_model(conn, org_id, slug, owner, name)


async def _version(conn: Conn, org_id: UUID, model: ModelRecord, digest: str | None) -> VersionRecord:
    if digest is None:
        found = (
            await models_repo.get_version(conn, org_id=org_id, version_id=model.latest_version_id)
            if model.latest_version_id
            else None
        )
        if found is None:
            raise InvalidInput(f"model {model.name} has no version yet: push one first", field="version")
        return found
    found = await models_repo.find_version(conn, org_id=org_id, digest=digest, model_id=model.id)
    if found is None:
        raise InvalidInput(f"version {digest!r} is not a version of model {model.name}", field="version")
    return found


# ------------------------------------------------------------------------------ use cases


async def create(
    db: Database,
    ctx: TenantContext,
    *,
    owner: str | None,
    name: str,
    model: str,
    version: str | None,
    hardware: Hardware | None,
    scaling: Scaling,
) -> DeploymentView:
    check_name(name)
    if name.startswith(IMPLICIT_PREFIX):
        raise InvalidInput(f"name: {IMPLICIT_PREFIX!r} starts the names of models' own deployments", field="name")
    org_id, created_by = ctx.org_id, ctx.user_id
    async with db.transaction(org_id, user_id=created_by) as conn:
        slug = await owner_slug(conn, org_id)
        if owner is not None and owner != slug:
            raise NotFound(f"organization {owner!r} not found; this credential's organization is {slug!r}")
        m = await _model(conn, org_id, slug, model)
        v = await _version(conn, org_id, m, version)
        lo, hi = scaling.min_replicas or 0, scaling.max_replicas or 1
        idle = scaling.idle_timeout_s or 300
        _check_scaling(lo, hi, idle)
        hw = hardware or m.hardware
        d = await repo.create(
            conn,
            org_id=org_id,
            name=name,
            model_id=m.id,
            version_id=v.id,
            implicit=False,
            min_replicas=lo,
            max_replicas=hi,
            idle_timeout_s=idle,
            concurrency=v.concurrency,
            hardware=hw,
            created_by=created_by,
        )
        if d is None:
            raise Conflict(f"deployment {slug}/{name} already exists", field="name")
        replica_spec(d, slug, v.digest)  # hardware a job could not ask for is refused now, not at the first start
        await deployment_event(conn, d, "deployment.created", actor=ctx.actor, model=m.name)
        return DeploymentView(slug, d, [], 0, None)


async def implicit_for(conn: Conn, org_id: UUID, model: ModelRecord, version: VersionRecord) -> Deployment:
    """The model's own deployment (min 0, max 1, the model's hardware), created on first use,
    moved to ``version`` (a new release) when it is the model's latest and the deployment is behind."""
    d = await repo.implicit_of(conn, org_id=org_id, model_id=model.id)
    if d is None:
        created = await repo.create(
            conn,
            org_id=org_id,
            name=_implicit_name(model.name),
            model_id=model.id,
            version_id=version.id,
            implicit=True,
            min_replicas=0,
            max_replicas=1,
            idle_timeout_s=300,
            concurrency=version.concurrency,
            hardware=model.hardware,
            created_by=None,
        )
        d = created or await repo.implicit_of(conn, org_id=org_id, model_id=model.id)
        assert d is not None
        if created is not None:
            await deployment_event(conn, d, "deployment.created", actor="predictions", model=model.name, implicit=True)
    if d.version_id != version.id and version.id == model.latest_version_id:
        moved = await repo.update(
            conn,
            org_id=org_id,
            deployment_id=d.id,
            fields={"version_id": version.id, "release": d.release + 1, "concurrency": version.concurrency},
        )
        assert moved is not None
        await deployment_event(conn, moved, "deployment.updated", actor="predictions", fields=["version"])
        d = moved
    return d


def _implicit_name(model_name: str) -> str:
    # Explicit deployments may not use the prefix (``create`` refuses it), so this name is free.
    return f"{IMPLICIT_PREFIX}{model_name}"[:100]


async def update(
    db: Database,
    ctx: TenantContext,
    owner: str,
    name: str,
    *,
    version: str | None,
    hardware: Hardware | None,
    scaling: Scaling,
) -> DeploymentView:
    """A new version or hardware makes a new release: replicas of older releases are rolled
    (docs/predictions.md); scaling bounds apply from the autoscaler's next tick."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        current = await named(conn, org_id, slug, owner, name)
        d = await repo.get(conn, org_id=org_id, deployment_id=current.id, lock=True)
        assert d is not None
        fields: dict[str, Any] = {}
        changed: list[str] = []
        if version is not None:
            m = await models_repo.get_model_by_id(conn, org_id=org_id, model_id=d.model_id)
            assert m is not None
            v = await _version(conn, org_id, m, version)
            if v.id != d.version_id:
                fields |= {"version_id": v.id, "concurrency": v.concurrency}
                changed.append("version")
        if hardware is not None and hardware != d.hardware:
            replica_spec(d, slug, d.digest, hardware)
            fields |= repo.hardware_columns(hardware)
            changed.append("hardware")
        if changed:
            fields["release"] = d.release + 1
        lo = d.min_replicas if scaling.min_replicas is None else scaling.min_replicas
        hi = d.max_replicas if scaling.max_replicas is None else scaling.max_replicas
        idle = d.idle_timeout_s if scaling.idle_timeout_s is None else scaling.idle_timeout_s
        _check_scaling(lo, hi, idle)
        for key, new, old in (("min_replicas", lo, d.min_replicas), ("max_replicas", hi, d.max_replicas)):
            if new != old:
                fields[key] = new
                changed.append(key)
        if idle != d.idle_timeout_s:
            fields["idle_timeout_s"] = idle
            changed.append("idle_timeout_s")
        if fields:
            moved = await repo.update(conn, org_id=org_id, deployment_id=d.id, fields=fields)
            assert moved is not None
            d = moved
            await deployment_event(conn, d, "deployment.updated", actor=ctx.actor, fields=changed)
        return await _view(conn, slug, d)


async def get(db: Database, ctx: TenantContext, owner: str, name: str) -> DeploymentView:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        return await _view(conn, slug, await named(conn, org_id, slug, owner, name))


async def _view(conn: Conn, slug: str, d: Deployment) -> DeploymentView:
    live = await replicas_repo.of_deployment(conn, org_id=d.organization_id, deployment_id=d.id)
    stats = await predictions_repo.queue_stats(conn, org_id=d.organization_id, deployment_id=d.id)
    depth = sum(n for n, _ in stats.values())
    oldest = max((age for _, age in stats.values()), default=None)
    return DeploymentView(slug, d, live, depth, oldest)


async def page(
    db: Database, ctx: TenantContext, *, limit: int, before: tuple[datetime, UUID] | None
) -> list[DeploymentView]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        rows = await repo.page(conn, org_id=org_id, limit=limit, before=before)
        return [await _view(conn, slug, d) for d in rows]


async def delete(db: Database, ctx: TenantContext, owner: str, name: str) -> None:
    """Stop its replicas (their jobs are cancelled), fail what is queued or running on it, delete it."""
    org_id, actor = ctx.org_id, ctx.actor
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        deployment_id = (await named(conn, org_id, slug, owner, name)).id
        jobs = [r.job_id for r in await replicas_repo.of_deployment(conn, org_id=org_id, deployment_id=deployment_id)]
    for job_id in jobs:  # each in its own transaction: the job is locked before the deployment
        await jobs_service.cancel(db, ctx, job_id, reason=f"deployment {slug}/{name} deleted")
    async with db.transaction(org_id) as conn:
        d = await repo.get(conn, org_id=org_id, deployment_id=deployment_id, lock=True)
        if d is None:
            return
        why = f"deployment {slug}/{name} was deleted"
        for r in await replicas_repo.of_deployment(conn, org_id=org_id, deployment_id=d.id):
            await _cancel_job(conn, org_id, r.job_id, why, actor)  # started since: still pending
            moved = await queue.fail_on_replica(conn, org_id=org_id, replica_id=r.id, error=why)
            await predictions_moved(conn, moved, actor=actor)
        for version_id in await predictions_repo.queue_stats(conn, org_id=org_id, deployment_id=d.id):
            failed = await predictions_repo.fail_queued(
                conn, org_id=org_id, deployment_id=d.id, version_id=version_id, error=why
            )
            await predictions_moved(conn, failed, actor=actor)
        await deployment_event(conn, d, "deployment.deleted", actor=actor)
        await repo.delete(conn, org_id=org_id, deployment_id=d.id)


async def _cancel_job(conn: Conn, org_id: UUID, job_id: UUID, why: str, actor: str | None) -> None:
    job = await jobs_repo.get_for_update(conn, org_id=org_id, job_id=job_id)
    if job is None:
        return
    if job.status in (JobStatus.PENDING, JobStatus.ALLOCATED):
        await transition_job(conn, job, JobStatus.CANCELLED, reason=why, actor=actor)
    elif job.status is JobStatus.RUNNING and job.cancel_requested_at is None:
        await jobs_repo.request_cancel(conn, org_id=org_id, job_id=job_id)


# ------------------------------------------------------------------------------ replicas


async def start_replica(
    conn: Conn, d: Deployment, version: VersionRecord, *, owner: str, actor: str, user_id: UUID | None = None
) -> Replica:
    """A new replica of ``d`` running ``version``: a pending job of kind ``replica`` plus its row.
    Budgets apply (BudgetExceeded); the scheduler places it under the organization's quotas."""
    spec = replica_spec(replace(d, version_id=version.id), owner, version.digest)
    org_id = d.organization_id
    estimate = await costs.estimate(conn, org_id, spec)
    await budgets.admit(conn, org_id, user_id=user_id, labels=spec.labels, estimate=estimate)
    job = await jobs_repo.create_gpu_job(conn, org_id=org_id, spec=spec, submitted_by=user_id, kind="replica")
    await jobs_service.record_submitted(conn, job, actor=actor)
    replica = await replicas_repo.create(
        conn,
        org_id=org_id,
        deployment_id=d.id,
        version_id=version.id,
        job_id=job.id,
        slots=version.concurrency,
        release=d.release,
    )
    await replica_event(conn, replica, "replica.created", actor=actor, release=d.release)
    return replica


async def drain(conn: Conn, replicas: list[Replica], *, actor: str, reason: str) -> list[UUID]:
    """Ready replicas stop claiming, finish what they run, and exit (told through the claim reply)."""
    ready = [r for r in replicas if r.status is ReplicaStatus.READY]
    if not ready:
        return []
    moved = await replicas_repo.drain(conn, org_id=ready[0].organization_id, replica_ids=[r.id for r in ready])
    for r in ready:
        if r.id in moved:
            await replica_event(conn, r, "replica.draining", actor=actor, reason=reason)
    return moved
