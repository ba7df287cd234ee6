"""/v1/agent/assignments and /v1/agent/jobs/*: the running-work protocol through HTTP, with host credentials."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import (
    bearer,
    chunk,
    exited,
    heartbeat,
    placed_job,
    register,
    started,
    upload,
)
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_jobs_api import field_of
from tests.api.test_tenancy_api import assert_problem
from tests.execution.helpers import job, snapshot
from tests.scheduling.helpers import scheduler


async def _poll(client: httpx.AsyncClient, credential: str, wait_s: float = 0) -> list[dict[str, Any]]:
    r = await client.get("/v1/agent/assignments", params={"wait_s": wait_s}, headers=bearer(credential))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["assignments"]
    return found


async def test_the_long_poll_returns_a_placed_job_promptly(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.MEMBER)
    admin: Tenant = await tenant(Role.ADMIN, t.org)
    cred = (await register(client, admin, "node-1", 2))["credential"]
    started_at = time.monotonic()
    assert await _poll(client, cred, 0) == []
    assert time.monotonic() - started_at < 2

    poll = asyncio.create_task(_poll(client, cred, 20))
    await asyncio.sleep(0.2)  # the poll is waiting: it must be woken, not find the job on its first read
    assert not poll.done()
    r = await client.post(
        "/v1/jobs",
        json={"name": "train", "command": ["python", "train.py"], "env": {"EPOCHS": "3"}, "max_runtime_s": 60},
        headers=t.headers,
    )
    job_id = r.json()["id"]
    placed_at = time.monotonic()
    await scheduler(db).run_once()
    (a,) = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - placed_at < 3
    assert (a["job_id"], a["attempt"], a["name"], a["command"], a["script"]) == (
        job_id, 1, "train", ["python", "train.py"], None,
    )  # fmt: skip
    assert a["env"] == {"EPOCHS": "3"} and a["max_runtime_s"] == 60 and a["gpu_milli"] == 1000
    assert [(g["uuid"], g["milli"]) for g in a["gpus"]] == [("GPU-node-1-0", 1000)] and a["allocated_at"]
    # Delivered again until the agent says it started; then no more.
    assert [x["job_id"] for x in await _poll(client, cred)] == [job_id]
    assert (await started(client, cred, job_id)).status_code == 204
    assert await _poll(client, cred) == []


async def test_the_long_poll_checks_its_wait_and_its_credential(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    for bad in (31, -1, "nan", "x"):
        r = await client.get("/v1/agent/assignments", params={"wait_s": bad}, headers=bearer(cred))
        assert_problem(r, 422)
        assert field_of(r) == "wait_s"
    assert_problem(await client.get("/v1/agent/assignments", headers=t.headers), 401, "not an API key")
    assert_problem(await client.post(f"/v1/agent/jobs/{uuid.uuid4()}/started", json={"attempt": 1}), 401)


async def test_started_and_exit_move_the_job_and_resends_are_no_ops(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    for _ in range(2):
        assert (await started(client, cred, job_id)).status_code == 204
    row = await job(db, uuid.UUID(job_id))
    assert row["status"] == "running" and row["started_at"] is not None
    for _ in range(2):  # the second: its reply was lost
        assert (await exited(client, cred, job_id, exit_code=0, reason="exited with code 0")).status_code == 204
    got = (await client.get(f"/v1/jobs/{job_id}", headers=t.headers)).json()
    assert (got["status"], got["exit_code"], got["gpus"]) == ("succeeded", 0, [])
    events = [e["type"] for e in (await client.get(f"/v1/jobs/{job_id}/events", headers=t.headers)).json()["items"]]
    assert events.count("job.running") == 1 and events.count("job.succeeded") == 1
    # A different outcome for the same attempt: refused.
    r = await exited(client, cred, job_id, status="failed", exit_code=3)
    assert_problem(r, 409, "already reported")


async def test_a_failure_with_retries_requeues_and_the_old_attempt_is_fenced(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db, retry={"on_failure": True, "max_attempts": 2})
    assert (await started(client, cred, job_id)).status_code == 204
    assert (
        await exited(client, cred, job_id, status="failed", exit_code=3, reason="exited with code 3")
    ).status_code == 204
    row = await job(db, uuid.UUID(job_id))
    assert (row["status"], row["attempt"]) == ("pending", 2)
    # Reports about attempt 1 (now stale) and about attempt 2 (not placed here): 409, nothing changes.
    before = await snapshot(db)
    for r in (
        await started(client, cred, job_id, attempt=1),
        await started(client, cred, job_id, attempt=2),
        await exited(client, cred, job_id, attempt=2),
        await upload(client, cred, job_id, [chunk(0, "stdout", 0, b"late")], attempt=2),
    ):
        assert_problem(r, 409)
        body = r.json()
        assert (body["title"], body["job_id"], body["current_attempt"]) == ("Stale Attempt", job_id, 2)
    assert await snapshot(db) == before
    # Were attempt 1 still running (a partition), its heartbeat would be told to kill it.
    kill = (await heartbeat(client, cred, running=[{"job_id": job_id, "attempt": 1}])).json()["instructions"]["kill"]
    assert kill == [{"job_id": job_id, "attempt": 1, "reason": "fenced", "grace_s": 5.0}]
    # The failed attempt's own trailing output is still taken.
    r = await upload(client, cred, job_id, [chunk(0, "stderr", 0, b"Traceback ...\n")], attempt=1)
    assert r.status_code == 200 and r.json()["stored_bytes"] == 14


async def test_another_organizations_agent_gets_409_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    a: Tenant = await tenant(Role.ADMIN)
    b: Tenant = await tenant(Role.ADMIN)
    cred_a = (await register(client, a, "node-a"))["credential"]
    cred_b = (await register(client, b, "node-b"))["credential"]
    job_id = await placed_job(client, a, db)
    assert await _poll(client, cred_b) == [] and len(await _poll(client, cred_a)) == 1
    before = await snapshot(db)
    for r in (
        await started(client, cred_b, job_id),
        await exited(client, cred_b, job_id, status="failed", exit_code=1),
        await upload(client, cred_b, job_id, [chunk(0, "stdout", 0, b"x")]),
        await started(client, cred_a, str(uuid.uuid4())),
    ):
        assert_problem(r, 409)
        assert r.json()["title"] == "Stale Attempt"
    assert await snapshot(db) == before
    r = await client.post(
        "/v1/agent/heartbeat",
        json={"gpus": [], "running": [{"job_id": job_id, "attempt": 1}]},
        headers=bearer(cred_b),
    )
    assert r.json()["instructions"]["kill"] == [{"job_id": job_id, "attempt": 1, "reason": "fenced", "grace_s": 5.0}]


async def test_heartbeat_returns_kill_orders(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    other = await placed_job(client, t, db)
    for j in (job_id, other):
        assert (await started(client, cred, j)).status_code == 204
    ghost = str(uuid.uuid4())
    running = [{"job_id": job_id, "attempt": 1}, {"job_id": other, "attempt": 1}, {"job_id": ghost, "attempt": 1}]
    r = await heartbeat(client, cred, running=running)
    assert r.status_code == 200, r.text
    assert r.json()["instructions"]["kill"] == [{"job_id": ghost, "attempt": 1, "reason": "fenced", "grace_s": 5.0}]

    cancelled = await client.post(f"/v1/jobs/{job_id}/cancel", headers=t.headers)
    assert cancelled.json()["status"] == "running" and cancelled.json()["cancel_requested_at"]
    running[1]["attempt"] = 2  # not the attempt the server knows
    kill = (await heartbeat(client, cred, running=running)).json()["instructions"]["kill"]
    assert kill == [
        {"job_id": job_id, "attempt": 1, "reason": "cancelled", "grace_s": 30.0},
        {"job_id": other, "attempt": 2, "reason": "fenced", "grace_s": 5.0},
        {"job_id": ghost, "attempt": 1, "reason": "fenced", "grace_s": 5.0},
    ]
    # The agent stops the cancelled one and says so; the job ends cancelled.
    assert (await exited(client, cred, job_id, status="cancelled", signal=15, reason="cancelled")).status_code == 204
    assert (await client.get(f"/v1/jobs/{job_id}", headers=t.headers)).json()["status"] == "cancelled"


async def test_the_post_long_poll_carries_the_same_stops_as_the_heartbeat(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    other: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    keep = await placed_job(client, t, db)
    foreign = await placed_job(client, other, db)  # another tenant's job: unknown here, so fenced
    for j in (job_id, keep):
        assert (await started(client, cred, j)).status_code == 204
    assert (await client.post(f"/v1/jobs/{job_id}/cancel", headers=t.headers)).status_code == 200
    running = [{"job_id": j, "attempt": 1} for j in (job_id, keep, foreign)]
    started_at = time.monotonic()
    r = await client.post("/v1/agent/assignments", json={"wait_s": 10, "running": running}, headers=bearer(cred))
    assert r.status_code == 200, r.text
    assert time.monotonic() - started_at < 5  # answered at once: there are stops
    assert r.json()["assignments"] == []
    assert r.json()["kill"] == [
        {"job_id": job_id, "attempt": 1, "reason": "cancelled", "grace_s": 30.0},
        {"job_id": foreign, "attempt": 1, "reason": "fenced", "grace_s": 5.0},
    ]
    beat = (await heartbeat(client, cred, running=running)).json()["instructions"]["kill"]
    assert beat == r.json()["kill"]
    r = await client.post("/v1/agent/assignments", json={"wait_s": 0, "running": [running[1]]}, headers=bearer(cred))
    assert r.json() == {"assignments": [], "kill": []}
    bad = await client.post("/v1/agent/assignments", json={"wait_s": 31}, headers=bearer(cred))
    assert_problem(bad, 422)
    assert_problem(await client.post("/v1/agent/assignments", json={}, headers=t.headers), 401, "not an API key")


async def test_reconcile_after_an_agent_restart(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t, n=4))["credential"]
    alive, ended, forgotten, unstarted = [await placed_job(client, t, db) for _ in range(4)]
    for j in (alive, ended, forgotten):
        assert (await started(client, cred, j)).status_code == 204
    ghost = str(uuid.uuid4())
    body = {
        "jobs": [
            {"job_id": alive, "attempt": 1, "alive": True},
            {"job_id": ended, "attempt": 1, "alive": False, "outcome": {"status": "failed", "exit_code": 2}},
            {"job_id": unstarted, "attempt": 1, "alive": True},
            {"job_id": ghost, "attempt": 1, "alive": True},
        ]
    }
    r = await client.post("/v1/agent/reconcile", json=body, headers=bearer(cred))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["decisions"] == [
        {"job_id": alive, "attempt": 1, "action": "continue", "reason": None, "grace_s": 0.0},
        {"job_id": ended, "attempt": 1, "action": "forget", "reason": None, "grace_s": 0.0},
        {"job_id": unstarted, "attempt": 1, "action": "continue", "reason": None, "grace_s": 0.0},
        {"job_id": ghost, "attempt": 1, "action": "kill", "reason": "fenced", "grace_s": 5.0},
    ]
    assert out["lost"] == [forgotten]
    statuses = {j: (await job(db, uuid.UUID(j)))["status"] for j in (alive, ended, forgotten, unstarted)}
    assert statuses == {alive: "running", ended: "failed", forgotten: "pending", unstarted: "running"}
    # The same reconcile again changes nothing more.
    before = await snapshot(db)
    again = await client.post("/v1/agent/reconcile", json=body, headers=bearer(cred))
    assert again.status_code == 200 and again.json()["lost"] == []
    assert await snapshot(db) == before


async def test_log_uploads_check_base64_and_the_body_limit(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    assert (await started(client, cred, job_id)).status_code == 204
    bad = [chunk(0, "stdout", 0, b"ok"), {**chunk(1, "stdout", 2, b""), "data_b64": "not base64!"}]
    r = await upload(client, cred, job_id, bad)
    assert_problem(r, 422, "chunks[1].data_b64")
    assert r.json()["field"] == "chunks[1].data_b64"
    r = await upload(client, cred, job_id, [chunk(0, "stdout", 0, b"a"), chunk(0, "stderr", 0, b"b")])
    assert_problem(r, 422)  # two chunks with one seq
    # A log upload may exceed the 1 MiB body limit of every other route (3 MiB of JSON here) ...
    big = bytes(range(256)) * 4608  # 1.1 MiB
    parts = [chunk(0, "stdout", 0, big), chunk(1, "stderr", 0, big)]
    r = await upload(client, cred, job_id, parts)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "acked_seq": 1, "stored_chunks": 2, "stored_bytes": 2 * len(big), "duplicate_chunks": 0, "truncated": False,
    }  # fmt: skip
    # ... but not 4 MiB, and the heartbeat keeps its limit.
    huge = [chunk(i, "stdout", i * len(big), big) for i in range(1, 4)]
    assert_problem(await upload(client, cred, job_id, huge), 413)
    padded = b'{"gpus": []' + b" " * (1024 * 1024) + b"}"
    r = await client.post(
        "/v1/agent/heartbeat", content=padded, headers={**bearer(cred), "content-type": "application/json"}
    )
    assert_problem(r, 413)
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select count(*) from job_logs") == 2
