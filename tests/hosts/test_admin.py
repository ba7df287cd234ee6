"""Admin operations on hosts and GPUs: guarded transitions, events, and removal rules."""

from __future__ import annotations

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import GpuStatus, HostStatus
from gpufleet.errors import Conflict, InvalidTransition, NotFound
from gpufleet.limits import MAX_PAGE
from gpufleet.services.allocation import allocate_gpu
from gpufleet.services.host_views import page_hosts
from gpufleet.services.hosts import (
    clear_gpu_health,
    drain_host,
    end_host_maintenance,
    remove_host,
    set_gpu_maintenance,
    start_host_maintenance,
    undrain_host,
)
from tests.factories import create_job, create_org, ctx_for
from tests.hosts.helpers import event_types, register, sql


async def test_host_transitions_follow_the_table_and_write_events(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    h = me.host_id
    assert (await drain_host(db, ctx_for(org.id), host_id=h, reason="upgrade")).status is HostStatus.DRAINING
    with pytest.raises(InvalidTransition, match="draining; it cannot go to ready"):
        await end_host_maintenance(db, ctx_for(org.id), host_id=h)
    assert (await undrain_host(db, ctx_for(org.id), host_id=h)).status is HostStatus.READY
    assert (await start_host_maintenance(db, ctx_for(org.id), host_id=h)).status is HostStatus.MAINTENANCE
    with pytest.raises(InvalidTransition):
        await undrain_host(db, ctx_for(org.id), host_id=h)
    host = await end_host_maintenance(db, ctx_for(org.id), host_id=h)
    assert (host.status, host.status_reason) == (HostStatus.READY, None)
    assert await event_types(db, h) == [
        "host.registered",
        "host.draining",
        "host.ready",
        "host.maintenance",
        "host.ready",
    ]
    other = await create_org(db, "Other")
    with pytest.raises(NotFound):
        await drain_host(db, ctx_for(other.id), host_id=h)


async def test_remove_waits_for_running_work(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id)
    job = await create_job(db, org.id)
    await allocate_gpu(db, ctx_for(org.id), gpu_id=reg.gpus[0].id, job_id=job.id)
    with pytest.raises(Conflict, match="still has 1 allocated or running job"):
        await remove_host(db, ctx_for(org.id), host_id=me.host_id)
    await sql(db, "update jobs set status = 'succeeded' where id = $1", job.id)
    removed = await remove_host(db, ctx_for(org.id), host_id=me.host_id)
    assert removed.removed_at is not None
    assert await page_hosts(db, ctx_for(org.id), limit=MAX_PAGE) == []
    assert [h.id for h in await page_hosts(db, ctx_for(org.id), limit=MAX_PAGE, include_removed=True)] == [me.host_id]
    assert (await event_types(db, me.host_id))[-1] == "host.removed"
    assert await event_types(db, reg.gpus[0].id) == ["gpu.added", "gpu.offline"]
    with pytest.raises(NotFound):
        await remove_host(db, ctx_for(org.id), host_id=me.host_id)


async def test_gpu_maintenance_and_health_clearing(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id)
    gpu = reg.gpus[0]
    moved = await set_gpu_maintenance(db, ctx_for(org.id), gpu_id=gpu.id, on=True, reason="reseat")
    assert (moved.status, moved.status_reason) == (GpuStatus.MAINTENANCE, "reseat")
    job = await create_job(db, org.id)
    with pytest.raises(Conflict):  # the ledger refuses GPUs in maintenance
        await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=job.id)
    back = await set_gpu_maintenance(db, ctx_for(org.id), gpu_id=gpu.id, on=False)
    assert (back.status, back.status_reason) == (GpuStatus.AVAILABLE, None)
    with pytest.raises(InvalidTransition, match="not in maintenance"):
        await set_gpu_maintenance(db, ctx_for(org.id), gpu_id=gpu.id, on=False)
    with pytest.raises(InvalidTransition, match="not unhealthy"):
        await clear_gpu_health(db, ctx_for(org.id), gpu_id=gpu.id)
    # An unhealthy GPU still holding an allocation goes back to "allocated".
    await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=job.id)
    await sql(db, "update gpu_resources set status = 'unhealthy', status_reason = 'XID' where id = $1", gpu.id)
    assert (await clear_gpu_health(db, ctx_for(org.id), gpu_id=gpu.id)).status is GpuStatus.ALLOCATED
    assert await event_types(db, gpu.id) == [
        "gpu.added",
        "gpu.maintenance",
        "gpu.available",
        "gpu.allocated",
    ]
    other = await create_org(db, "Other")
    with pytest.raises(NotFound):
        await clear_gpu_health(db, ctx_for(other.id), gpu_id=gpu.id)
