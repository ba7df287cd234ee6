"""/v1/jobs over HTTP: submit (and every validation rule), get, list, cancel, events, wait."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.api.app import create_app
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.jobs import JobStatus
from gpufleet.domain.tenancy import Role
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services.transitions import transition_job
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem
from tests.factories import create_host
from tests.scheduling.helpers import assert_clean, scheduler

A100 = ("A100-80GB", 81920)
BASE: dict[str, Any] = {"name": "train", "command": ["python", "train.py"]}


def field_of(r: httpx.Response) -> str:
    """The field a 422 names: domain errors carry `field`, schema errors `errors[0].field`."""
    body = r.json()
    field = body.get("field") or body["errors"][0]["field"]
    assert body["detail"].startswith(str(field).split(".")[0]), body  # the message leads with it too
    return str(field)


async def submit(client: httpx.AsyncClient, t: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/jobs", json={**BASE, **body}, headers=t.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def finish(db: Database, org_id: uuid.UUID, job_id: str, to: JobStatus) -> None:
    """Drive an allocated job through running to ``to``, as the agent's reports would."""
    async with db.transaction(org_id) as conn:
        job = await jobs_repo.get_for_update(conn, org_id=org_id, job_id=uuid.UUID(job_id))
        assert job is not None and job.status is JobStatus.ALLOCATED
        job = await transition_job(conn, job, JobStatus.RUNNING)
        await transition_job(conn, job, to, exit_code=0 if to is JobStatus.SUCCEEDED else 1)


async def test_submit_converts_units_and_returns_the_job(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    job = await submit(
        client,
        t,
        env={"EPOCHS": "3"},
        working_dir="/srv/work",
        labels={"team": "nlp"},
        model_type="text",
        priority=5,
        max_runtime="1h30m",
        retry={"on_failure": True, "max_attempts": 4},
        gpu_count=2,
        min_memory_gb=40,
        gpu_models=["A100"],
        cpu_cores=2.5,
        ram_gb=16,
    )
    assert job["status"] == "pending" and job["organization_id"] == str(t.org.id)
    assert job["submitted_by"] == str(t.user.id) and job["attempt"] == 1 and job["gpus"] == []
    assert job["max_runtime_s"] == 5400
    assert job["retry"] == {"on_host_loss": True, "on_failure": True, "max_attempts": 4}
    assert job["requirements"] == {
        "gpu_count": 2,
        "gpu_milli": 1000,
        "min_memory_mb": 40960,
        "gpu_models": ["A100"],
        "cpu_milli": 2500,
        "ram_mb": 16384,
    }
    assert (job["env"], job["labels"], job["working_dir"], job["model_type"]) == (
        {"EPOCHS": "3"},
        {"team": "nlp"},
        "/srv/work",
        "text",
    )
    r = await client.get(f"/v1/jobs/{job['id']}", headers=t.headers)
    assert r.status_code == 200 and r.json() == job


async def test_fraction_script_and_cpu_only_jobs(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    frac = await submit(client, t, gpu_milli=250)
    assert (frac["requirements"]["gpu_count"], frac["requirements"]["gpu_milli"]) == (1, 250)
    script = await submit(client, t, command=None, script="echo hi\n", gpu_count=0, max_runtime_s=60)
    assert script["script"] == "echo hi\n" and script["command"] is None  # kept exactly
    spaced = await submit(client, t, name="  spaced  ", command=["printf", " %s ", ""], env={"PAD": " x "})
    assert (spaced["name"], spaced["command"], spaced["env"]) == ("spaced", ["printf", " %s ", ""], {"PAD": " x "})
    assert script["requirements"]["gpu_milli"] == 0 and script["max_runtime_s"] == 60


async def test_the_sketch_request_shape_is_accepted(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    sketch = {
        "name": "Text Generation",
        "model_type": "text",
        "gpu_requirements": {"min_memory": 8, "gpu_type": "NVIDIA A100"},
    }
    r = await client.post("/v1/jobs", json=sketch, headers=t.headers)
    assert_problem(r, 422, "command")
    assert field_of(r) == "command"  # as written the sketch's job has nothing to run
    r = await client.post("/v1/jobs", json={**sketch, "command": ["python", "generate.py"]}, headers=t.headers)
    assert r.status_code == 201, r.text
    req = r.json()["requirements"]
    assert (req["min_memory_mb"], req["gpu_models"], r.json()["model_type"]) == (8192, ["NVIDIA A100"], "text")


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"gpu_count": 2, "gpu_milli": 500}, "gpu_milli"),
    ({"gpu_count": 0, "gpu_milli": 500}, "gpu_milli"),
    ({"gpu_milli": 0}, "gpu_milli"),
    ({"gpu_count": 65}, "gpu_count"),
    ({"gpu_count": -1}, "gpu_count"),
    ({"script": "echo hi"}, "script"),  # both command and script
    ({"command": None}, "command"),  # neither
    ({"command": []}, "command"),
    ({"unknown": 1}, "unknown"),
    ({"status": "running"}, "status"),
    ({"id": str(uuid.uuid4())}, "id"),
    ({"organization_id": str(uuid.uuid4())}, "organization_id"),
    ({"priority": -1001}, "priority"),
    ({"priority": "5"}, "priority"),  # JSON types are strict
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"max_runtime": "2 weeks"}, "max_runtime"),
    ({"max_runtime": "2h", "max_runtime_s": 60}, "max_runtime"),
    ({"max_runtime_s": 0}, "max_runtime_s"),
    ({"gpu_count": 0, "min_memory_gb": 8}, "min_memory_gb"),
    ({"gpu_count": 0, "gpu_requirements": {"gpu_type": "A100"}}, "gpu_requirements.gpu_type"),
    ({"gpu_requirements": {"min_memory": 8}, "min_memory_gb": 8}, "gpu_requirements.min_memory"),
    ({"gpu_requirements": {"gpu_type": "A100"}, "gpu_models": ["H100"]}, "gpu_requirements.gpu_type"),
    ({"gpu_requirements": {"min_memory": 8, "count": 2}}, "gpu_requirements.count"),
    ({"gpu_models": ["!!!"]}, "gpu_models[0]"),
    ({"min_memory_gb": -1}, "min_memory_gb"),
    ({"cpu_cores": -0.5}, "cpu_cores"),
    ({"ram_gb": 1e9}, "ram_gb"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"labels": {"bad key!": "x"}}, "labels"),
    ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
    ({"retry": {"on_failure": 1}}, "retry.on_failure"),
]


@pytest.mark.parametrize(("change", "field"), INVALID, ids=[f for _, f in INVALID])
async def test_invalid_submissions_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, change: dict[str, Any], field: str
) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    r = await client.post("/v1/jobs", json=body, headers=t.headers)
    assert_problem(r, 422)
    assert field_of(r) == field
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select count(*) from jobs") == 0


async def test_text_postgresql_cannot_store_is_refused(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    for change in ({"working_dir": "/a\x00b"}, {"command": ["echo", "a\x00"]}, {"env": {"K": "\x00"}}):
        r = await client.post("/v1/jobs", json={**BASE, **change}, headers=t.headers)
        assert_problem(r, 422, f"{next(iter(change))}")
    assert (await client.get("/v1/jobs", headers=t.headers)).json()["items"] == []


async def test_roles_and_other_organizations(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    member: Tenant = await tenant(Role.MEMBER)
    viewer: Tenant = await tenant(Role.VIEWER, member.org)
    stranger: Tenant = await tenant(Role.OWNER)
    r = await client.post("/v1/jobs", json=BASE, headers=viewer.headers)
    assert_problem(r, 403, "member")
    job = await submit(client, member, name="mine")
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=viewer.headers)).status_code == 200
    assert_problem(await client.post(f"/v1/jobs/{job['id']}/cancel", headers=viewer.headers), 403)
    for method, path in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("GET", "/wait?timeout_s=0"),
    ]:
        r = await client.request(method, f"/v1/jobs/{job['id']}{path}", headers=stranger.headers)
        assert_problem(r, 404, "not found")
    listed = (await client.get("/v1/jobs", headers=stranger.headers)).json()
    assert listed == {"items": [], "next_cursor": None}
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=member.headers)).json()["status"] == "pending"


async def test_cancel_pending_and_allocated_releases_everything(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    _, (gpu,) = await create_host(db, t.org.id, gpus_spec=(A100,))
    placed = await submit(client, t, cpu_cores=4, ram_gb=8)
    waiting = await submit(client, t)
    assert (await scheduler(db).run_once()).placed == 1
    got = (await client.get(f"/v1/jobs/{placed['id']}", headers=t.headers)).json()
    assert got["status"] == "allocated" and got["host_id"] and got["pending_reason"] is None
    assert got["gpus"] == [{"gpu_id": str(gpu.id), "host_id": got["host_id"], "milli": 1000, "memory_mb": 81920}]

    r = await client.post(f"/v1/jobs/{placed['id']}/cancel", headers=t.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["gpus"] == []
    assert r.json()["status_reason"] == f"cancelled by user:{t.user.id}"
    async with db.system_transaction() as conn:
        g = await conn.fetchrow("select allocated_milli, allocated_memory_mb from gpu_resources where id = $1", gpu.id)
        h = await conn.fetchrow("select cpu_milli_allocated, ram_mb_allocated from hosts where id = $1", got["host_id"])
        open_allocs = await conn.fetchval(
            "select count(*) from allocations where job_id = $1 and released_at is null", uuid.UUID(placed["id"])
        )
    assert tuple(g) == (0, 0) and tuple(h) == (0, 0) and open_allocs == 0
    await assert_clean(db)

    r = await client.post(f"/v1/jobs/{waiting['id']}/cancel", headers=t.headers)
    assert r.json()["status"] == "cancelled"
    again = await client.post(f"/v1/jobs/{waiting['id']}/cancel", headers=t.headers)
    assert again.status_code == 200 and again.json() == r.json()  # cancelling twice is not an error
    assert (await scheduler(db).run_once()).placed == 0  # the freed GPU has nothing left to run
    await assert_clean(db)


async def test_cancelling_a_finished_job_is_409(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    await create_host(db, t.org.id, gpus_spec=(A100,))
    job = await submit(client, t)
    never = await submit(client, t, gpu_count=8)
    await scheduler(db).run_once()
    await finish(db, t.org.id, job["id"], JobStatus.SUCCEEDED)
    r = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=t.headers)
    assert_problem(r, 409, "already finished")
    r = await client.post(f"/v1/jobs/{never['id']}/cancel", headers=t.headers)
    assert_problem(r, 409, "allocation_failed")
    done = (await client.get(f"/v1/jobs/{job['id']}", headers=t.headers)).json()
    assert (done["status"], done["exit_code"], done["gpus"]) == ("succeeded", 0, [])
    assert done["started_at"] and done["finished_at"]


async def test_pending_reasons_and_never_satisfiable_jobs(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    for _ in range(3):
        await create_host(db, t.org.id, gpus_spec=(A100,) * 2, cpu_cores=64)
    # One GPU busy on every host: each filler takes most of a host's CPU cores.
    fillers = [await submit(client, t, cpu_cores=40) for _ in range(3)]
    assert (await scheduler(db).run_once()).placed == 3
    big = await submit(client, t, gpu_count=2, gpu_models=["A100-80GB"])
    never = await submit(client, t, gpu_count=8)
    wrong = await submit(client, t, gpu_models=["H100"])
    await scheduler(db).run_once()
    got = (await client.get(f"/v1/jobs/{big['id']}", headers=t.headers)).json()
    assert got["status"] == "pending"
    assert got["pending_reason"].count(": 1 A100-80GB GPU free, the job needs 2") == 3, got["pending_reason"]
    failed = (await client.get(f"/v1/jobs/{never['id']}", headers=t.headers)).json()
    assert failed["status"] == "allocation_failed" and failed["pending_reason"] is None
    assert "no host could ever hold 8 GPU" in failed["status_reason"] and failed["finished_at"]
    failed = (await client.get(f"/v1/jobs/{wrong['id']}", headers=t.headers)).json()
    assert failed["status"] == "allocation_failed" and failed["status_reason"].startswith("no host has a H100 GPU")
    # Once capacity frees up, the waiting job runs and its reason is gone.
    for f in fillers:
        await client.post(f"/v1/jobs/{f['id']}/cancel", headers=t.headers)
    await scheduler(db).run_once()
    got = (await client.get(f"/v1/jobs/{big['id']}", headers=t.headers)).json()
    assert got["status"] == "allocated" and got["pending_reason"] is None and len(got["gpus"]) == 2
    await assert_clean(db)


async def test_list_filters_and_pagination(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    await create_host(db, t.org.id, gpus_spec=(A100,))
    made = [
        await submit(client, t, name=f"j{i}", labels={"team": "a" if i % 2 else "b", "n": str(i)}) for i in range(5)
    ]
    await scheduler(db).run_once()  # the oldest (j0) takes the one GPU
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/jobs", params=params, headers=viewer.headers)).json()
        assert len(page["items"]) <= 2
        seen += [j["name"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["j4", "j3", "j2", "j1", "j0"]  # newest first, each once
    r = await client.get("/v1/jobs", params={"status": "allocated"}, headers=t.headers)
    (alloc,) = r.json()["items"]
    assert alloc["id"] == made[0]["id"] and len(alloc["gpus"]) == 1
    r = await client.get("/v1/jobs", params=[("status", "allocated"), ("status", "pending")], headers=t.headers)
    assert len(r.json()["items"]) == 5
    r = await client.get("/v1/jobs", params=[("label", "team=a")], headers=t.headers)
    assert [j["name"] for j in r.json()["items"]] == ["j3", "j1"]
    r = await client.get("/v1/jobs", params=[("label", "team=a"), ("label", "n=3")], headers=t.headers)
    assert [j["name"] for j in r.json()["items"]] == ["j3"]
    for params, field in [
        ({"label": "team"}, "label"),
        ({"status": "sleeping"}, "status.0"),
        ({"cursor": "garbage"}, "cursor"),
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
    ]:
        r = await client.get("/v1/jobs", params=params, headers=t.headers)
        assert_problem(r, 422)
        assert field_of(r) == field


async def test_events_in_order_with_paging(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    await create_host(db, t.org.id, gpus_spec=(A100,))
    job = await submit(client, t)
    await scheduler(db).run_once()
    await client.post(f"/v1/jobs/{job['id']}/cancel", headers=t.headers)
    r = await client.get(f"/v1/jobs/{job['id']}/events", headers=t.headers)
    page = r.json()
    types = [e["type"] for e in page["items"]]
    assert types == ["job.submitted", "job.allocated", "job.cancelled"] and page["next_cursor"] is None
    seqs = [e["seq"] for e in page["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert page["items"][0]["actor"] == f"user:{t.user.id}" and page["items"][2]["data"]["to"] == "cancelled"
    first = (await client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1}, headers=t.headers)).json()
    assert [e["seq"] for e in first["items"]] == seqs[:1] and first["next_cursor"]
    rest = await client.get(f"/v1/jobs/{job['id']}/events", params={"cursor": first["next_cursor"]}, headers=t.headers)
    assert [e["seq"] for e in rest.json()["items"]] == seqs[1:]
    tail = await client.get(f"/v1/jobs/{job['id']}/events", params={"after_seq": seqs[1]}, headers=t.headers)
    assert [e["type"] for e in tail.json()["items"]] == ["job.cancelled"]
    r = await client.get(f"/v1/jobs/{job['id']}/events", params={"cursor": "x1"}, headers=t.headers)
    assert_problem(r, 422)
    assert field_of(r) == "cursor"
    assert_problem(await client.get(f"/v1/jobs/{uuid.uuid4()}/events", headers=t.headers), 404)


async def test_wait_returns_when_finished_or_at_the_timeout(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    job = await submit(client, t)
    started = time.monotonic()
    r = await client.get(f"/v1/jobs/{job['id']}/wait", params={"timeout_s": 0.3}, headers=t.headers)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert time.monotonic() - started >= 0.3
    await client.post(f"/v1/jobs/{job['id']}/cancel", headers=t.headers)
    started = time.monotonic()
    r = await client.get(f"/v1/jobs/{job['id']}/wait", params={"timeout_s": 60}, headers=t.headers)
    assert r.json()["status"] == "cancelled" and time.monotonic() - started < 5
    for bad in (61, -1, "nan"):
        r = await client.get(f"/v1/jobs/{job['id']}/wait", params={"timeout_s": bad}, headers=t.headers)
        assert_problem(r, 422)
        assert field_of(r) == "timeout_s"


# Every /v1 operation, without exception.
OTHER_SECTIONS: tuple[str, ...] = ()


def test_docs_api_md_lists_every_operation() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    spec = create_app(Settings(), bootstrap=False, background=False).openapi()
    missing = [
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/") and not path.startswith(OTHER_SECTIONS)
        for method in ops
        if f"`{method.upper()} {path}" not in doc
    ]
    assert not missing, f"docs/api.md does not describe {missing}"
