"""The sketch's repository operations: create_gpu_job, get_gpu_jobs, get_available_gpus, allocate_gpu."""

from __future__ import annotations

import asyncio

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.jobs import GpuRequirement, JobSpec, JobStatus
from gpufleet.errors import Conflict, InvalidInput
from gpufleet.repo import allocations, events, gpus
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services.allocation import allocate_gpu
from tests.factories import create_host, create_job, create_org, ctx_for
from tests.scheduling.helpers import status_of


async def test_create_gpu_job_is_pending_and_tenant_scoped(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    async with db.transaction(a.id) as conn:
        job = await jobs_repo.create_gpu_job(
            conn,
            org_id=a.id,
            spec=JobSpec(
                name="Text Generation",
                model_type="text",
                command=["python", "gen.py"],
                gpu=GpuRequirement(memory_min_mib=8192, models=("A100",)),
            ),
        )
    assert job.status is JobStatus.PENDING and job.organization_id == a.id
    async with db.transaction(b.id) as conn:
        assert await jobs_repo.get(conn, org_id=b.id, job_id=job.id) is None
        # Even asking for org A's id explicitly under B's context finds nothing: RLS decides.
        assert await jobs_repo.get(conn, org_id=a.id, job_id=job.id) is None


async def test_get_gpu_jobs_filters_by_status_and_limit(db: Database) -> None:
    org = await create_org(db)
    made = [await create_job(db, org.id, name=f"j{i}") for i in range(5)]
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set status = 'cancelled' where id = $1", made[0].id)
    async with db.transaction(org.id) as conn:
        assert len(await jobs_repo.get_gpu_jobs(conn, org_id=org.id)) == 5
        pending = await jobs_repo.get_gpu_jobs(conn, org_id=org.id, status=JobStatus.PENDING)
        assert {j.id for j in pending} == {j.id for j in made[1:]}
        newest = await jobs_repo.get_gpu_jobs(conn, org_id=org.id, limit=2)
        assert [j.name for j in newest] == ["j4", "j3"]


async def test_get_available_gpus_matches_memory_type_and_health(db: Database) -> None:
    org = await create_org(db)
    _, small = await create_host(db, org.id, gpus_spec=(("T4", 15360),))
    _, big = await create_host(db, org.id, gpus_spec=(("A100-80GB", 81920), ("A100-80GB", 81920)))
    drained, _ = await create_host(db, org.id, gpus_spec=(("A100-80GB", 81920),))
    async with db.system_transaction() as conn:
        await conn.execute("update hosts set status = 'draining' where id = $1", drained.id)
        await conn.execute("update gpu_resources set status = 'unhealthy' where id = $1", big[1].id)
    async with db.transaction(org.id) as conn:
        every = await gpus.get_available_gpus(conn, org_id=org.id)
        assert {g.id for g in every} == {small[0].id, big[0].id}
        assert [g.id for g in await gpus.get_available_gpus(conn, org_id=org.id, min_memory_mb=16000)] == [big[0].id]
        found = await gpus.get_available_gpus(conn, org_id=org.id, gpu_type="NVIDIA A100")
        assert [g.id for g in found] == [big[0].id]
        assert await gpus.get_available_gpus(conn, org_id=org.id, gpu_type="H100") == []


async def test_allocate_gpu_then_conflict_changes_nothing(db: Database) -> None:
    org = await create_org(db)
    host, (gpu, _) = await create_host(db, org.id)
    first, second = await create_job(db, org.id), await create_job(db, org.id)
    alloc = await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=first.id)
    assert alloc.milli == 1000 and alloc.host_id == host.id
    with pytest.raises(Conflict):
        await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=second.id)
    async with db.transaction(org.id) as conn:
        g = await gpus.get(conn, org_id=org.id, gpu_id=gpu.id)
        assert g is not None and g.allocated_milli == 1000 and g.status == "allocated"
        j2 = await jobs_repo.get(conn, org_id=org.id, job_id=second.id)
        assert j2 is not None and j2.status is JobStatus.PENDING and j2.host_id is None
        conflicts = await events.by_type(conn, org_id=org.id, type="allocation.conflict")
        assert len(conflicts) == 1 and conflicts[0].data["job_id"] == str(second.id)


async def test_terminal_state_releases_the_gpu(db: Database) -> None:
    org = await create_org(db)
    _, (gpu, _) = await create_host(db, org.id)
    job = await create_job(db, org.id)
    await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=job.id)
    async with db.transaction(org.id) as conn:
        await jobs_repo.transition(
            conn, org_id=org.id, job_id=job.id, allowed_from=[JobStatus.ALLOCATED], to=JobStatus.CANCELLED
        )
        g = await gpus.get(conn, org_id=org.id, gpu_id=gpu.id)
        assert g is not None and g.allocated_milli == 0 and g.status == "available"
        assert await allocations.active_allocations_for_jobs(conn, org_id=org.id, job_ids=[job.id]) == []


async def test_fractional_allocations_never_exceed_a_gpu(db: Database) -> None:
    org = await create_org(db)
    _, (gpu, _) = await create_host(db, org.id)
    jobs = [await create_job(db, org.id, gpu_milli=400) for _ in range(3)]
    await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=jobs[0].id, milli=400)
    await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=jobs[1].id, milli=400)
    with pytest.raises(Conflict):
        await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=jobs[2].id, milli=400)
    async with db.transaction(org.id) as conn:
        g = await gpus.get(conn, org_id=org.id, gpu_id=gpu.id)
        assert g is not None and g.allocated_milli == 800


async def test_racing_allocate_gpu_calls_have_exactly_one_winner(db: Database) -> None:
    org = await create_org(db)
    _, (gpu, _) = await create_host(db, org.id)
    jobs = [await create_job(db, org.id) for _ in range(8)]
    results = await asyncio.gather(
        *(allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=j.id) for j in jobs), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    async with db.system_transaction() as conn:
        active = await conn.fetchval("select count(*) from allocations where released_at is null")
        allocated_jobs = await conn.fetchval("select count(*) from jobs where status = 'allocated'")
        over = await conn.fetchval(
            """select count(*) from gpu_resources g
                where g.allocated_milli <> (select coalesce(sum(milli), 0) from allocations a
                                            where a.gpu_id = g.id and a.released_at is null)"""
        )
    assert active == 1 and allocated_jobs == 1 and over == 0


async def test_a_direct_allocation_gives_the_share_the_job_asked_for(db: Database) -> None:
    """The agent runs the job's own share (its gpu_milli): a different one is refused, nothing changes."""
    org = await create_org(db)
    _, (gpu, _) = await create_host(db, org.id)
    job = await create_job(db, org.id, gpu_milli=250)
    with pytest.raises(InvalidInput, match="asks for 250 of 1000, not 1000"):
        await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=job.id, milli=1000)
    assert (await status_of(db, job.id))[0] == "pending"
    alloc = await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=job.id)
    assert alloc.milli == 250
    cpu_only = await create_job(db, org.id, gpu_count=0, gpu_milli=0)
    with pytest.raises(InvalidInput, match="CPU-only"):
        await allocate_gpu(db, ctx_for(org.id), gpu_id=gpu.id, job_id=cpu_only.id)
