"""Quotas as use cases: set, list (with usage), delete. Roles are checked by the HTTP layer (admins).

A quota bounds what an organization holds at once, in whole-GPU equivalents of allocated
milli-GPU (a 0.5-GPU job counts 0.5). A job over quota is never refused: it waits, and its
pending reason says which quota holds it ("quota: 8 of 8 A100-80GB GPUs in use").
"""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.jobs import gpu_type_tokens
from gpufleet.domain.quotas import Quota, QuotaUsage
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput
from gpufleet.repo import events
from gpufleet.repo import quotas as repo
from gpufleet.services.lookup import found


def _model(gpu_model: str | None) -> str | None:
    """The quota's GPU model, normalized; ``max_gpus`` is bounded by the request schema (QuotaSet)."""
    if gpu_model is None:
        return None
    if not isinstance(gpu_model, str):
        raise InvalidInput("gpu_model must be a string or null", field="gpu_model")
    model = gpu_model.strip()
    if not model or len(model) > 100 or not gpu_type_tokens(model):
        raise InvalidInput(
            "gpu_model must name a GPU model (1-100 characters, e.g. 'A100-80GB'); null means all models",
            field="gpu_model",
        )
    return model


async def set_quota(db: Database, ctx: TenantContext, *, gpu_model: str | None, max_gpus: int) -> QuotaUsage:
    """Create or replace the organization's quota for ``gpu_model`` (None: all GPUs together);
    returned with what is allocated under it now, read in the same transaction."""
    model = _model(gpu_model)
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        quota = await repo.upsert(conn, org_id=org_id, gpu_model=model, max_gpus=max_gpus)
        await events.record(conn, ctx, "quota", quota.id, "quota.set", {"gpu_model": model, "max_gpus": max_gpus})
        return _used(quota, await repo.allocated_milli_by_model(conn, org_id=org_id))


async def list_quotas(db: Database, ctx: TenantContext) -> list[QuotaUsage]:
    """Every quota of the organization with what is allocated under it now."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        quotas = await repo.list_for_org(conn, org_id=org_id)
        usage = await repo.allocated_milli_by_model(conn, org_id=org_id) if quotas else {}
    return [_used(q, usage) for q in quotas]


def _used(q: Quota, usage: dict[str, int]) -> QuotaUsage:
    """``q`` with the GPUs allocated under it, from allocated milli-GPU by model."""
    if q.gpu_model is None:
        milli = sum(usage.values())
    else:
        want = set(gpu_type_tokens(q.gpu_model))
        milli = sum(v for m, v in usage.items() if want <= set(gpu_type_tokens(m)))
    return QuotaUsage(q, milli / 1000)


async def delete_quota(db: Database, ctx: TenantContext, quota_id: UUID) -> Quota:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        quota = found(await repo.delete(conn, org_id=org_id, quota_id=quota_id), f"quota {quota_id}")
        await events.record(
            conn, ctx, "quota", quota.id, "quota.deleted", {"gpu_model": quota.gpu_model, "max_gpus": quota.max_gpus}
        )
        return quota
