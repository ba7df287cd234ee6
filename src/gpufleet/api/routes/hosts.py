"""/v1/join-tokens, /v1/hosts, /v1/gpus and /v1/fleet: what people do with hosts and GPUs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request

from gpufleet.api.deps import (
    BAD_WINDOW,
    DB,
    DEFAULT_LIMIT,
    NOT_FOUND,
    Cursor,
    Limit,
    ModelPart,
    Tenant,
    WindowEnd,
    WindowStart,
    forget_credentials,
    metric_read,
    requires,
)
from gpufleet.domain.hosts import GpuDetail, GpuStatus, HostDetail, HostStatus, MetricAgg, MetricBucket
from gpufleet.pagination import decode_cursor
from gpufleet.schemas.common import Page, vars_of
from gpufleet.schemas.hosts import (
    FleetSummaryRead,
    GpuRead,
    HostDetailRead,
    HostRead,
    HostStatusChange,
    JoinTokenCreate,
    JoinTokenCreated,
    JoinTokenRead,
    MaintenanceChange,
    MetricSeriesRead,
    ModelCountRead,
)
from gpufleet.services import host_views, hosts, join_tokens, metrics

router = APIRouter(prefix="/v1")

CONFLICT: dict[int, dict[str, Any]] = {409: {"description": "the object's state does not allow this"}}


def host_read(host: HostDetail) -> HostRead:
    return HostRead.model_validate(host)


def gpu_read(gpu: GpuDetail) -> GpuRead:
    return GpuRead.model_validate(gpu)


# ---------------------------------------------------------------- join tokens


@router.post("/join-tokens", status_code=201, tags=["join-tokens"], **requires("join_tokens.create"))
async def create_join_token(body: JoinTokenCreate, ctx: Tenant, db: DB) -> JoinTokenCreated:
    """A token an agent registers a host with; the token itself is in this answer only."""
    issued = await join_tokens.create_join_token(
        db,
        ctx,
        name=body.name,
        max_uses=body.max_uses,
        expires_in=timedelta(hours=body.expires_in_hours),
    )
    return JoinTokenCreated.model_validate({**vars_of(issued.token), "token": issued.secret})


@router.get("/join-tokens", tags=["join-tokens"], **requires("join_tokens.list"))
async def list_join_tokens(
    ctx: Tenant,
    db: DB,
    include_inactive: Annotated[bool, Query(description="Also revoked, expired and used-up tokens.")] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[JoinTokenRead]:
    rows = await host_views.page_join_tokens(
        db, ctx, limit=limit, after=decode_cursor(cursor), include_inactive=include_inactive
    )
    return Page[JoinTokenRead].of(rows, limit, lambda t: JoinTokenRead.model_validate(t))


@router.delete("/join-tokens/{token_id}", tags=["join-tokens"], **requires("join_tokens.revoke", NOT_FOUND))
async def revoke_join_token(token_id: UUID, ctx: Tenant, db: DB) -> JoinTokenRead:
    """Revoke a token (idempotent); hosts registered with it keep working."""
    token = await join_tokens.revoke_join_token(db, ctx, token_id=token_id)
    return JoinTokenRead.model_validate(token)


# ---------------------------------------------------------------- hosts


@router.get("/hosts", tags=["hosts"], **requires("hosts.list"))
async def list_hosts(
    ctx: Tenant,
    db: DB,
    status: HostStatus | None = None,
    include_removed: bool = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[HostRead]:
    """Hosts by name."""
    rows = await host_views.page_hosts(
        db,
        ctx,
        limit=limit,
        after=decode_cursor(cursor, (str, UUID)),
        status=status,
        include_removed=include_removed,
    )
    return Page[HostRead].of(rows, limit, host_read, key=lambda h: (h.name, h.id))


@router.get("/hosts/{host_id}", tags=["hosts"], **requires("hosts.read", NOT_FOUND))
async def get_host(host_id: UUID, ctx: Tenant, db: DB) -> HostDetailRead:
    """A host with its GPUs."""
    host, gpus = await host_views.host_with_gpus(db, ctx, host_id=host_id)
    return HostDetailRead.model_validate({**vars_of(host), "gpus": [gpu_read(g) for g in gpus]})


@router.post("/hosts/{host_id}/drain", tags=["hosts"], **requires("hosts.manage", {**NOT_FOUND, **CONFLICT}))
async def drain_host(host_id: UUID, ctx: Tenant, db: DB, body: HostStatusChange | None = None) -> HostRead:
    """No new work on the host; what runs there finishes."""
    reason = body.reason if body else None
    return host_read(await hosts.drain_host(db, ctx, host_id=host_id, reason=reason))


@router.post("/hosts/{host_id}/undrain", tags=["hosts"], **requires("hosts.manage", {**NOT_FOUND, **CONFLICT}))
async def undrain_host(host_id: UUID, ctx: Tenant, db: DB) -> HostRead:
    """A draining host takes new work again."""
    return host_read(await hosts.undrain_host(db, ctx, host_id=host_id))


@router.post("/hosts/{host_id}/maintenance", tags=["hosts"], **requires("hosts.manage", {**NOT_FOUND, **CONFLICT}))
async def host_maintenance(host_id: UUID, ctx: Tenant, db: DB, body: MaintenanceChange | None = None) -> HostRead:
    """`on: true` (the default) takes the host out of service; `on: false` brings it back to ready."""
    body = body or MaintenanceChange()
    if body.on:
        host = await hosts.start_host_maintenance(db, ctx, host_id=host_id, reason=body.reason)
    else:
        host = await hosts.end_host_maintenance(db, ctx, host_id=host_id)
    return host_read(host)


@router.post("/hosts/{host_id}/revoke", tags=["hosts"], **requires("hosts.revoke", NOT_FOUND))
async def revoke_host(host_id: UUID, ctx: Tenant, db: DB, request: Request) -> HostRead:
    """The host's credential stops working at once; it can register again with a join token."""
    revoked = await hosts.revoke_host(db, ctx, host_id=host_id)
    forget_credentials(request)
    return host_read(revoked)


@router.delete(
    "/hosts/{host_id}",
    tags=["hosts"],
    **requires("hosts.remove", {**NOT_FOUND, 409: {"description": "jobs still run or are allocated there"}}),
)
async def remove_host(host_id: UUID, ctx: Tenant, db: DB, request: Request) -> HostRead:
    """Retire a host: revoked, its GPUs offline, its name free; its history stays."""
    removed = await hosts.remove_host(db, ctx, host_id=host_id)
    forget_credentials(request)
    return host_read(removed)


# ---------------------------------------------------------------- GPUs


@router.get("/gpus", tags=["gpus"], **requires("gpus.list"))
async def list_gpus(
    ctx: Tenant,
    db: DB,
    model: ModelPart = None,
    status: GpuStatus | None = None,
    host_id: UUID | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[GpuRead]:
    """GPUs of live hosts, by host name and index."""
    rows = await host_views.page_gpus(
        db,
        ctx,
        limit=limit,
        after=decode_cursor(cursor, (UUID,)),
        status=status,
        host_id=host_id,
        model=model or None,
    )
    return Page[GpuRead].of(rows, limit, gpu_read, key=lambda g: (g.id,))


@router.get("/gpus/{gpu_id}", tags=["gpus"], **requires("gpus.read", NOT_FOUND))
async def get_gpu(gpu_id: UUID, ctx: Tenant, db: DB) -> GpuRead:
    return gpu_read(await hosts.get_gpu(db, ctx, gpu_id=gpu_id))


@router.post("/gpus/{gpu_id}/clear-health", tags=["gpus"], **requires("gpus.manage", {**NOT_FOUND, **CONFLICT}))
async def clear_gpu_health(gpu_id: UUID, ctx: Tenant, db: DB) -> GpuRead:
    """Declare an unhealthy GPU fit again (the only way back from `unhealthy`)."""
    return gpu_read(await hosts.clear_gpu_health(db, ctx, gpu_id=gpu_id))


@router.post("/gpus/{gpu_id}/maintenance", tags=["gpus"], **requires("gpus.manage", {**NOT_FOUND, **CONFLICT}))
async def gpu_maintenance(gpu_id: UUID, ctx: Tenant, db: DB, body: MaintenanceChange | None = None) -> GpuRead:
    """`on: true` (the default) takes the GPU out of service; `on: false` puts it back."""
    body = body or MaintenanceChange()
    gpu = await hosts.set_gpu_maintenance(db, ctx, gpu_id=gpu_id, on=body.on, reason=body.reason)
    return gpu_read(gpu)


@router.get(
    "/gpus/{gpu_id}/metrics",
    tags=["gpus"],
    **requires("metrics.read", {**NOT_FOUND, **BAD_WINDOW}),
)
async def gpu_metrics(
    gpu_id: UUID,
    request: Request,
    ctx: Tenant,
    db: DB,
    start: WindowStart = None,
    end: WindowEnd = None,
    bucket: MetricBucket = MetricBucket.RAW,
    agg: MetricAgg = MetricAgg.AVG,
) -> MetricSeriesRead:
    """One GPU's samples over [start, end): raw, or aggregated per 1m/5m/1h bucket (UTC-aligned)."""
    series = await metrics.gpu_series(db, ctx, gpu_id=gpu_id, **metric_read(request, start, end, bucket, agg))
    return MetricSeriesRead.model_validate(series)


@router.get("/fleet/summary", tags=["gpus"], **requires("fleet.read"))
async def fleet_summary(
    ctx: Tenant,
    db: DB,
    window_minutes: Annotated[int, Query(ge=1, le=1440, description="Averages over this many minutes.")] = 15,
) -> FleetSummaryRead:
    """GPUs by status and model, hosts by status, recent average load, foreign usage."""
    s = await metrics.fleet_summary(db, ctx, window_minutes=window_minutes)
    models = [ModelCountRead.model_validate(m) for m in s.gpus_by_model]
    return FleetSummaryRead(
        organization_id=s.organization_id,
        window_minutes=s.window_minutes,
        gpus_total=s.gpus_total,
        gpus_by_status=dict(s.gpus_by_status),
        gpus_by_model=models,
        gpus_with_foreign_usage=s.gpus_with_foreign_usage,
        gpus_simulated=sum(m.simulated for m in models),
        hosts_total=s.hosts_total,
        hosts_by_status=dict(s.hosts_by_status),
        avg_utilization_pct=s.avg_utilization_pct,
        avg_memory_used_mb=s.avg_memory_used_mb,
        samples_in_window=s.samples_in_window,
    )
