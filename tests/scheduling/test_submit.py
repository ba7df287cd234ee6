"""Submission validation (each rule names its field) and the jobs service below HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.jobs import GpuRequirement, JobSpec, JobStatus
from gpufleet.errors import InvalidInput, InvalidTransition, NotFound
from gpufleet.schemas.jobs import JobCreate
from gpufleet.services import feed
from gpufleet.services import jobs as jobs_service
from gpufleet.services.job_spec import validate
from gpufleet.services.wakeups import WakeHub
from tests.factories import changed, create_host, create_org, ctx_for
from tests.scheduling.helpers import assert_clean, scheduler, submit

OK = JobSpec(name="train", command=["python", "train.py"])
BODY = {"name": "train", "command": ["python", "train.py"]}

BAD: list[tuple[str, dict[str, Any]]] = [
    ("name", {"name": ""}),
    ("name", {"name": "x" * 201}),
    ("command", {"command": None, "script": None}),
    ("script", {"script": "echo hi"}),  # both command and script
    ("command", {"command": []}),
    ("command[1]", {"command": ["python", 3]}),
    ("command[0]", {"command": ["py\x00thon"]}),
    ("script", {"command": None, "script": "   "}),
    ("env", {"env": {"1BAD": "x"}}),
    ("env.KEY", {"env": {"KEY": 1}}),
    ("env", {"env": ["KEY=1"]}),
    ("labels", {"labels": {"bad key!": "x"}}),
    ("labels.team", {"labels": {"team": 5}}),
    ("priority", {"priority": 1001}),
    ("gpu_count", {"gpu_count": 65}),
    ("gpu_count", {"gpu_count": -1}),
    ("gpu_count", {"gpu_count": True}),
    ("gpu_milli", {"gpu_milli": 500, "gpu_count": 2}),
    ("gpu_milli", {"gpu_milli": 0}),
    ("gpu_milli", {"gpu_milli": 1001}),
    ("gpu_milli", {"gpu_count": 0, "gpu_milli": 500}),
    ("min_memory_mb", {"min_memory_mb": -1}),
    ("gpu_models", {"gpu_count": 0, "gpu_milli": 0, "gpu_models": ["A100"]}),
    ("gpu_models", {"gpu_models": "A100"}),
    ("gpu_models[0]", {"gpu_models": ["--"]}),
    ("cpu_milli", {"cpu_milli": -5}),
    ("ram_mb", {"ram_mb": 10**12}),
    ("max_runtime_s", {"max_runtime_s": 0}),
    ("max_attempts", {"max_attempts": 0}),
    ("retry_on_failure", {"retry_on_failure": "yes"}),
    ("working_dir", {"working_dir": "a\x00b"}),
]


@pytest.mark.parametrize(("field", "change"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_each_rule_names_its_field(field: str, change: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as err:
        validate(changed(OK, **change))
    assert err.value.extra["field"] == field
    assert field.split("[")[0].split(".")[0] in err.value.message


def test_valid_specs_are_normalised() -> None:
    assert validate(OK) == OK
    cpu_only = validate(changed(OK, gpu_count=0))
    assert cpu_only.gpu.milli == 0  # the default 1000 means nothing without GPUs
    assert validate(changed(OK, gpu_milli=250)).gpu.milli == 250
    assert validate(replace(OK, command=None, script="echo hi")).script == "echo hi"
    assert validate(changed(OK, gpu_models=["A100", " A100"])).gpu.models == ("A100",)


def test_the_requirement_is_one_value_in_mib() -> None:
    """GB become MiB once, at the schema; the sketch's shape and the flat fields give the same value."""
    flat = JobCreate.model_validate({**BODY, "min_memory_gb": 1.5, "gpu_models": ["A100"]}).to_spec()
    sketch = JobCreate.model_validate({**BODY, "gpu_requirements": {"min_memory": 1.5, "gpu_type": "A100"}}).to_spec()
    assert flat.gpu == sketch.gpu == GpuRequirement(count=1, milli=1000, memory_min_mib=1536, models=("A100",))
    assert GpuRequirement(count=0).validate() == GpuRequirement(count=0, milli=0)
    assert GpuRequirement(milli=250).validate().fractional and not GpuRequirement(count=0).validate().fractional


async def test_invalid_submission_writes_nothing(db: Database) -> None:
    org = await create_org(db)
    with pytest.raises(InvalidInput):
        await jobs_service.submit(db, ctx_for(org.id), changed(OK, gpu_count=2, gpu_milli=500))
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select count(*) from jobs") == 0


async def test_submit_writes_event_and_is_tenant_scoped(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    job = await jobs_service.submit(db, ctx_for(a.id), OK)
    assert job.status is JobStatus.PENDING
    evs = await jobs_service.events(db, ctx_for(a.id), job.id)
    assert [e.type for e in evs] == ["job.submitted"]
    with pytest.raises(NotFound):
        await jobs_service.get(db, ctx_for(b.id), job.id)
    with pytest.raises(NotFound):
        await jobs_service.cancel(db, ctx_for(b.id), job.id)
    with pytest.raises(NotFound):
        await jobs_service.events(db, ctx_for(b.id), job.id)
    assert (await jobs_service.get(db, ctx_for(a.id), job.id)).status is JobStatus.PENDING


async def test_list_jobs_keyset_pages_filters(db: Database) -> None:
    org = await create_org(db)
    ids = [await submit(db, org.id, name=f"j{i}", labels={"team": "a" if i % 2 else "b"}) for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        page = await jobs_service.list_jobs(db, ctx_for(org.id), limit=3, cursor=cursor)
        seen += [j.id for j in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        await submit(db, org.id, name="late")  # inserts while paging do not shift the pages
    assert seen == ids[::-1] and pages == 3
    team_a = await jobs_service.list_jobs(db, ctx_for(org.id), labels={"team": "a"})
    assert [j.id for j in team_a.items] == [ids[5], ids[3], ids[1]]
    await jobs_service.cancel(db, ctx_for(org.id), ids[0])
    cancelled = await jobs_service.list_jobs(db, ctx_for(org.id), status=JobStatus.CANCELLED)
    assert [j.id for j in cancelled.items] == [ids[0]]
    with pytest.raises(InvalidInput) as err:
        await jobs_service.list_jobs(db, ctx_for(org.id), cursor="not-a-cursor")
    assert err.value.extra["field"] == "cursor"


async def test_submit_place_and_cancel_release_at_once(db: Database) -> None:
    org = await create_org(db)
    host, gpus = await create_host(db, org.id)
    whole = await submit(db, org.id, gpu_count=2, cpu_milli=4000, ram_mb=8192)
    result = await scheduler(db).run_once()
    assert result.placed == 1
    async with db.system_transaction() as conn:
        rows = await conn.fetch("select gpu_id, milli, host_id from allocations where job_id = $1", whole)
        job = await conn.fetchrow("select status, host_id from jobs where id = $1", whole)
        h = await conn.fetchrow("select cpu_milli_allocated, ram_mb_allocated from hosts where id = $1", host.id)
    assert job is not None and job["status"] == "allocated" and job["host_id"] == host.id
    assert sorted(r["gpu_id"] for r in rows) == sorted(g.id for g in gpus) and {r["milli"] for r in rows} == {1000}
    assert h is not None and (h["cpu_milli_allocated"], h["ram_mb_allocated"]) == (4000, 8192)
    evs = [e.type for e in await jobs_service.events(db, ctx_for(org.id), whole)]
    assert evs == ["job.submitted", "job.allocated"]

    cancelled = await jobs_service.cancel(db, ctx_for(org.id), whole)
    assert cancelled.status is JobStatus.CANCELLED
    async with db.system_transaction() as conn:
        active = await conn.fetchval("select count(*) from allocations where released_at is null")
        gpu_sum = await conn.fetchval("select sum(allocated_milli) + sum(allocated_memory_mb) from gpu_resources")
        cpu = await conn.fetchval("select cpu_milli_allocated + ram_mb_allocated from hosts where id = $1", host.id)
    assert (active, gpu_sum, cpu) == (0, 0, 0)
    # cancelling twice is not an error; a pending job is cancelled at once too
    assert (await jobs_service.cancel(db, ctx_for(org.id), whole)).status is JobStatus.CANCELLED
    pending = await submit(db, org.id, gpu_count=4)  # pending until the next cycle
    assert (await jobs_service.cancel(db, ctx_for(org.id), pending)).status is JobStatus.CANCELLED
    await assert_clean(db)


async def test_cancel_running_marks_the_request(db: Database) -> None:
    org = await create_org(db)
    await create_host(db, org.id)
    job_id = await submit(db, org.id)
    await scheduler(db).run_once()
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set status = 'running' where id = $1", job_id)
    job = await jobs_service.cancel(db, ctx_for(org.id), job_id)
    assert job.status is JobStatus.RUNNING and job.cancel_requested_at is not None
    again = await jobs_service.cancel(db, ctx_for(org.id), job_id)
    assert again.cancel_requested_at == job.cancel_requested_at
    types = [e.type for e in await jobs_service.events(db, ctx_for(org.id), job_id)]
    assert types.count("job.cancel_requested") == 1
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set status = 'succeeded' where id = $1", job_id)
    with pytest.raises(InvalidTransition):
        await jobs_service.cancel(db, ctx_for(org.id), job_id)


async def test_wait_returns_on_terminal_state_or_timeout(db: Database) -> None:
    org = await create_org(db)
    job_id = await submit(db, org.id)
    timed_out = await jobs_service.wait(db, ctx_for(org.id), job_id, 0.1)
    assert timed_out.status is JobStatus.PENDING

    async def cancel_soon() -> None:
        await asyncio.sleep(0.15)
        await jobs_service.cancel(db, ctx_for(org.id), job_id)

    task = asyncio.create_task(cancel_soon())
    done = await jobs_service.wait(db, ctx_for(org.id), job_id, 10)
    await task
    assert done.status is JobStatus.CANCELLED


async def test_a_draining_hub_ends_job_and_event_long_polls_at_once(db: Database) -> None:
    """At shutdown a client's open job wait and event long poll answer now, not when their time is up."""
    org = await create_org(db)
    job = await submit(db, org.id, gpu_count=8)  # pending: no host
    hub = WakeHub(db, recheck_s=30)
    await hub.start()
    try:
        waits = [
            asyncio.create_task(jobs_service.wait(db, ctx_for(org.id), job, 30, hub=hub)),
            asyncio.create_task(feed.wait_for_events(db, ctx_for(org.id), after_seq=2**62, wait_s=30, hub=hub)),
        ]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in waits)
        hub.drain()
        waited, (found, _) = await asyncio.wait_for(asyncio.gather(*waits), 3)
        assert waited.status is JobStatus.PENDING and found == []
    finally:
        await hub.close()
