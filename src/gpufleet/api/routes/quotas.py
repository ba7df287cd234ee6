"""/v1/quotas: how many GPUs the organization may hold at once, overall or per model."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from gpufleet.api.deps import DB, NOT_FOUND, Tenant, requires
from gpufleet.domain.quotas import QuotaUsage
from gpufleet.schemas.common import vars_of
from gpufleet.schemas.jobs import QuotaRead, QuotaSet
from gpufleet.services import quotas

router = APIRouter(prefix="/v1", tags=["quotas"])


def _read(q: QuotaUsage) -> QuotaRead:
    return QuotaRead.model_validate({**vars_of(q.quota), "used_gpus": q.used_gpus})


@router.get("/quotas", **requires("quotas.list"))
async def list_quotas(ctx: Tenant, db: DB) -> list[QuotaRead]:
    """Every quota with what is allocated under it now (at most one per GPU model: not paginated)."""
    return [_read(q) for q in await quotas.list_quotas(db, ctx)]


@router.put("/quotas", **requires("quotas.set"))
async def set_quota(body: QuotaSet, ctx: Tenant, db: DB) -> QuotaRead:
    """Create or replace the quota for `gpu_model` (null: all GPUs together). Idempotent.

    Lowering a quota below what is in use stops nothing: new jobs wait until usage falls."""
    usage = await quotas.set_quota(db, ctx, gpu_model=body.gpu_model, max_gpus=body.max_gpus)
    return _read(usage)


@router.delete("/quotas/{quota_id}", status_code=204, **requires("quotas.delete", NOT_FOUND))
async def delete_quota(quota_id: UUID, ctx: Tenant, db: DB) -> Response:
    await quotas.delete_quota(db, ctx, quota_id)
    return Response(status_code=204)
