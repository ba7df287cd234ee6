"""The scheduler cycle on a real database: placement, reasons, quotas, failures, lost races."""

from __future__ import annotations

import pytest

from gpufleet.db.pool import Database
from gpufleet.errors import InvalidInput, NotFound
from gpufleet.repo import scheduling as sched_repo
from gpufleet.scheduler import commit
from gpufleet.scheduler.allocator import make_policy
from gpufleet.scheduler.decide import NO_HOSTS, decide_org
from gpufleet.services import quotas as quotas_service
from gpufleet.services.allocation import allocate_gpu
from tests.factories import create_host, create_org, ctx_for
from tests.scheduling.helpers import assert_clean, scheduler, status_of, submit

A100 = ("A100-80GB", 81920)
T4 = ("T4", 15360)


async def test_fractional_jobs_share_a_gpu_and_memory_follows_milli(db: Database) -> None:
    org = await create_org(db)
    _, (gpu,) = await create_host(db, org.id, gpus_spec=(A100,))
    jobs = [await submit(db, org.id, gpu_milli=250) for _ in range(5)]
    result = await scheduler(db).run_once()
    assert result.placed == 4 and result.still_pending == 1
    async with db.system_transaction() as conn:
        g = await conn.fetchrow("select allocated_milli, allocated_memory_mb from gpu_resources where id = $1", gpu.id)
    assert g is not None and (g["allocated_milli"], g["allocated_memory_mb"]) == (1000, 81920)
    status, reason, _ = await status_of(db, jobs[4])
    assert status == "pending" and reason and "0.25 GPU free" in reason
    await assert_clean(db)


async def test_model_tokens_and_multi_gpu_on_one_host(db: Database) -> None:
    org = await create_org(db)
    t4_host, _ = await create_host(db, org.id, gpus_spec=(T4,) * 4)
    a_host, _ = await create_host(db, org.id, gpus_spec=(A100,) * 2)
    want_a100 = await submit(db, org.id, gpu_count=2, gpu_models=["NVIDIA A100"])
    want_t4 = await submit(db, org.id, gpu_count=3, gpu_models=["t4"])
    assert (await scheduler(db).run_once()).placed == 2
    async with db.system_transaction() as conn:
        hosts = {r["id"]: r["host_id"] for r in await conn.fetch("select id, host_id from jobs")}
    assert hosts[want_a100] == a_host.id and hosts[want_t4] == t4_host.id
    await assert_clean(db)


async def test_never_satisfiable_fails_with_reason_but_no_hosts_waits(db: Database) -> None:
    org = await create_org(db)
    waiting = await submit(db, org.id, gpu_count=8)
    sched = scheduler(db)
    assert (await sched.run_once()).allocation_failed == 0
    assert await status_of(db, waiting) == ("pending", NO_HOSTS, None)

    host, _ = await create_host(db, org.id, gpus_spec=(T4,) * 2)
    async with db.system_transaction() as conn:  # a draining host still counts as inventory
        await conn.execute("update hosts set status = 'draining' where id = $1", host.id)
    too_many = await submit(db, org.id, gpu_count=2)
    wrong_model = await submit(db, org.id, gpu_models=["H100"])
    too_much_memory = await submit(db, org.id, min_memory_mb=40000)
    result = await sched.run_once()
    assert result.allocation_failed == 3  # the 8-GPU job, and two of the later ones
    assert (await status_of(db, too_many))[0] == "pending"  # fits the draining host once it is ready
    status, pending_reason, reason = await status_of(db, waiting)
    assert status == "allocation_failed" and pending_reason is None
    assert reason and "no host could ever hold 8 GPU" in reason
    assert ((await status_of(db, wrong_model))[2] or "").startswith("no host has a H100 GPU")
    assert "40000 MiB" in ((await status_of(db, too_much_memory))[2] or "")
    async with db.system_transaction() as conn:
        evs = await conn.fetch(
            "select data from events where entity_id = $1 and type = 'job.allocation_failed'", waiting
        )
    assert len(evs) == 1 and evs[0]["data"]["reason"] == reason and evs[0]["data"]["to"] == "allocation_failed"


async def test_pending_reason_is_written_only_when_it_changes(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,))
    first = await submit(db, org.id)
    second = await submit(db, org.id)
    sched = scheduler(db)
    r1 = await sched.run_once()
    assert r1.placed == 1 and r1.reasons_written == 1
    reason = (await status_of(db, second))[1]
    assert reason and "0 GPUs free, the job needs 1" in reason
    async with db.system_transaction() as conn:
        stamp = await conn.fetchval("select updated_at from jobs where id = $1", second)
    r2 = await sched.run_once()
    assert r2.placed == 0 and r2.reasons_written == 0
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select updated_at from jobs where id = $1", second) == stamp
        await conn.execute("update jobs set status = 'succeeded' where id = $1", first)
    r3 = await sched.run_once()
    assert r3.placed == 1 and (await status_of(db, second))[:2] == ("allocated", None)


async def test_quotas_overall_and_per_model_hold_jobs_with_reason(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id, gpus_spec=(A100,) * 4)
    await create_host(db, org.id, gpus_spec=(T4,) * 4)
    await quotas_service.set_quota(db, ctx_for(org.id), gpu_model="A100-80GB", max_gpus=2)
    await quotas_service.set_quota(db, ctx_for(org.id), gpu_model=None, max_gpus=3)
    a1 = await submit(db, org.id, gpu_models=["A100"], gpu_milli=500)
    a2 = await submit(db, org.id, gpu_count=1, gpu_models=["A100"])
    a3 = await submit(db, org.id, gpu_models=["A100"], gpu_milli=500)
    a4 = await submit(db, org.id, gpu_models=["A100"], gpu_milli=500)  # 2 of 2 A100s in use
    anything = await submit(db, org.id)  # may still use a T4 (1.5 + 0.5 ... of 3 overall)
    big = await submit(db, org.id, gpu_count=2, gpu_models=["T4"])  # 3 of 3 overall
    result = await scheduler(db).run_once()
    assert result.placed == 4
    assert (await status_of(db, a4))[:2] == ("pending", "quota: 2 of 2 A100-80GB GPUs in use")
    assert (await status_of(db, big))[1] == "quota: 3 of 3 GPUs in use"
    async with db.system_transaction() as conn:
        model = await conn.fetchval(
            "select g.model from allocations a join gpu_resources g on g.id = a.gpu_id where a.job_id = $1", anything
        )
    assert model == "T4"  # kept off the A100s by the per-model quota
    usage = {q.quota.gpu_model: q.used_gpus for q in await quotas_service.list_quotas(db, ctx_for(org.id))}
    assert usage == {None: 3.0, "A100-80GB": 2.0}
    for j in (a1, a2, a3):
        assert (await status_of(db, j))[0] == "allocated"
    # raising the quota lets the waiting jobs run; deleting it too
    await quotas_service.set_quota(db, ctx_for(org.id), gpu_model=None, max_gpus=6)
    quotas = await quotas_service.list_quotas(db, ctx_for(org.id))
    assert (await scheduler(db).run_once()).placed == 1  # big; a4 still held by the A100 quota
    assert (await status_of(db, a4))[1] == "quota: 2 of 2 A100-80GB GPUs in use"
    a100 = next(q.quota for q in quotas if q.quota.gpu_model == "A100-80GB")
    await quotas_service.delete_quota(db, ctx_for(org.id), a100.id)
    with pytest.raises(NotFound):
        await quotas_service.delete_quota(db, ctx_for(org.id), a100.id)
    with pytest.raises(InvalidInput):
        await quotas_service.set_quota(db, ctx_for(org.id), gpu_model="", max_gpus=1)
    assert (await scheduler(db).run_once()).placed == 1
    await assert_clean(db)


async def test_a_lost_race_is_retried_never_failed(db: Database) -> None:
    org = await create_org(db)
    _, (g1, g2) = await create_host(db, org.id)
    job = await submit(db, org.id)
    # decide on a snapshot, then let a concurrent allocate_gpu caller take that GPU before the commit
    async with db.system_transaction() as conn:
        snap = await sched_repo.snapshot(conn, queue_limit=100)
    decision = decide_org(snap.hosts[org.id], snap.pending, policy=make_policy("default"))
    (placement,) = decision.placements
    taken = placement[1].gpus[0].gpu_id
    rival = await submit(db, org.id)
    await allocate_gpu(db, ctx_for(org.id), gpu_id=g1.id if str(g1.id) == taken else g2.id, job_id=rival)
    outcome = await commit.commit_batch(db, commit.rows_of(decision.placements))
    assert outcome.placed == [] and outcome.conflicts == [job] and not outcome.aborted
    assert (await status_of(db, job))[0] == "pending"
    async with db.system_transaction() as conn:
        conflict = await conn.fetchrow(
            "select data from events where type = 'allocation.conflict' and entity_id = $1", job
        )
    assert conflict is not None and conflict["data"]["outcome"] == "retried"
    # the real cycle places it on the other GPU
    result = await scheduler(db).run_once()
    assert result.placed == 1 and (await status_of(db, job))[0] == "allocated"
    await assert_clean(db)


async def test_cycle_spans_organizations_but_keeps_them_apart(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    await create_host(db, a.id, gpus_spec=(A100,))
    a_jobs = [await submit(db, a.id) for _ in range(2)]
    b_job = await submit(db, b.id)
    result = await scheduler(db).run_once()
    assert result.placed == 1
    assert (await status_of(db, a_jobs[0]))[0] == "allocated"
    assert (await status_of(db, b_job))[:2] == ("pending", NO_HOSTS)
