"""/v1/deployments: a name -> a model version with scaling bounds and hardware, in Replicate's
shape (`current_release`), plus what runs now (replicas) and what waits (queue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from gpufleet.api.deps import DB, DEFAULT_LIMIT, NOT_FOUND, Cursor, Limit, Tenant, requires
from gpufleet.api.routes.models import page_urls
from gpufleet.pagination import created_key, decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.models import CursorPage
from gpufleet.schemas.predictions import DeploymentCreate, DeploymentRead, DeploymentUpdate
from gpufleet.services import deployments
from gpufleet.services.deployments import Scaling

router = APIRouter(prefix="/v1", tags=["deployments"])

EXISTS: dict[int, dict[str, Any]] = {409: {"description": "a deployment of that name exists"}}


@router.post("/deployments", status_code=201, **requires("deployments.manage", {**NOT_FOUND, **EXISTS}))
async def create_deployment(body: DeploymentCreate, ctx: Tenant, db: DB) -> DeploymentRead:
    """`{name, model: owner/name, version?, hardware?, min_instances?, max_instances?, idle_timeout_s?}`
    (Replicate's fields; gpufleet's `gpus`, `gpu_fraction`, ... refine the hardware)."""
    view = await deployments.create(
        db,
        ctx,
        owner=body.owner,
        name=body.name,
        model=body.model,
        version=body.version,
        hardware=body.to_hardware(),
        scaling=Scaling(body.min_instances, body.max_instances, body.idle_timeout_s),
    )
    return DeploymentRead.of(view)


@router.get("/deployments", **requires("deployments.list"))
async def list_deployments(
    ctx: Tenant, db: DB, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CursorPage[DeploymentRead]:
    """Newest first, the models' own deployments included (`implicit`)."""
    views = await deployments.page(db, ctx, limit=limit, before=decode_cursor(cursor))
    page = Page[DeploymentRead].of(views, limit, DeploymentRead.of, key=lambda v: created_key(v.deployment))
    return CursorPage[DeploymentRead].of(page, page_urls(request, "/v1/deployments", limit))


@router.get("/deployments/{owner}/{name}", **requires("deployments.read", NOT_FOUND))
async def get_deployment(owner: str, name: str, ctx: Tenant, db: DB) -> DeploymentRead:
    return DeploymentRead.of(await deployments.get(db, ctx, owner, name))


@router.patch("/deployments/{owner}/{name}", **requires("deployments.manage", NOT_FOUND))
async def update_deployment(owner: str, name: str, body: DeploymentUpdate, ctx: Tenant, db: DB) -> DeploymentRead:
    """A new `version` or hardware is a new release: replicas are replaced one by one, each old
    one drained once a new one is ready. Scaling bounds apply from the autoscaler's next pass."""
    view = await deployments.update(
        db,
        ctx,
        owner,
        name,
        version=body.version,
        hardware=body.to_hardware(),
        scaling=Scaling(body.min_instances, body.max_instances, body.idle_timeout_s),
    )
    return DeploymentRead.of(view)


@router.delete("/deployments/{owner}/{name}", status_code=204, **requires("deployments.manage", NOT_FOUND))
async def delete_deployment(owner: str, name: str, ctx: Tenant, db: DB) -> Response:
    """Its replicas are stopped (their jobs cancelled) and its queued or running predictions fail."""
    await deployments.delete(db, ctx, owner, name)
    return Response(status_code=204)
