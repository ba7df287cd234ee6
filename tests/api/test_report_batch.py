"""POST /v1/agent/reports: many starts, log uploads and exits in one request, each item answered alone."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain import Role
from tests.api.agent_helpers import bearer, chunk, placed_job, register
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_jobs_api import field_of
from tests.api.test_tenancy_api import assert_problem
from tests.execution.helpers import event_types, events, job, snapshot, sql


async def _reports(client: httpx.AsyncClient, credential: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/agent/reports", json=body, headers=bearer(credential))
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


def _started(job_id: str, attempt: int = 1, pid: int = 4242) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "pid": pid}


def _exit(job_id: str, attempt: int = 1, status: str = "succeeded", code: int | None = 0) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "status": status, "exit_code": code, "reason": f"exit {code}"}


def _logs(job_id: str, chunks: list[dict[str, Any]], attempt: int = 1) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "chunks": chunks}


def _results(reply: dict[str, Any], kind: str) -> list[str]:
    return [item["result"] for item in reply[kind]]


async def _counts(db: Database, job_id: str) -> tuple[int, int]:
    async with db.system_transaction() as conn:
        logs = await conn.fetchval("select count(*) from job_logs where job_id = $1", uuid.UUID(job_id))
        attempts = await conn.fetchval("select count(*) from job_attempts where job_id = $1", uuid.UUID(job_id))
    return int(logs), int(attempts)


async def test_a_job_started_logged_and_ended_in_one_batch_and_the_batch_resent(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    batch = {
        "started": [_started(job_id)],
        "logs": [_logs(job_id, [chunk(0, "stdout", 0, b"hello\n"), chunk(1, "stderr", 0, b"warn\n")])],
        "exits": [_exit(job_id)],
    }
    reply = await _reports(client, cred, **batch)
    assert (_results(reply, "started"), _results(reply, "logs"), _results(reply, "exits")) == (
        ["applied"],
        ["applied"],
        ["applied"],
    )
    assert reply["logs"][0]["ack"]["acked_seq"] == 1 and reply["logs"][0]["ack"]["stored_chunks"] == 2
    row = await job(db, uuid.UUID(job_id))
    assert row["status"] == "succeeded" and row["exit_code"] == 0 and row["started_at"] is not None
    assert await event_types(db, uuid.UUID(job_id)) == ["job.submitted", "job.allocated", "job.running", "job.succeeded"]
    running = dict(await events(db, uuid.UUID(job_id)))["job.running"]
    assert running["pid"] == 4242 and running["attempt"] == 1 and running["from"] == "allocated"
    async with db.system_transaction() as conn:
        a = await conn.fetchrow("select * from job_attempts where job_id = $1", uuid.UUID(job_id))
        allocations = await conn.fetchval(
            "select count(*) from allocations where job_id = $1 and released_at is null", uuid.UUID(job_id)
        )
    assert a is not None and (a["pid"], a["outcome"], a["reported_by"]) == (4242, "succeeded", "agent")
    assert allocations == 0  # released with the exit, as by the single route
    assert await _counts(db, job_id) == (2, 1)

    before = await snapshot(db)
    again = await _reports(client, cred, **batch)  # its reply was lost
    assert _results(again, "started") == _results(again, "exits") == _results(again, "logs") == ["applied"]
    assert again["logs"][0]["ack"]["duplicate_chunks"] == 2 and again["logs"][0]["ack"]["stored_chunks"] == 0
    assert await snapshot(db) == before


async def test_a_stale_item_is_refused_alone_and_the_others_apply(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t, n=4))["credential"]
    good, other, fenced = [await placed_job(client, t, db) for _ in range(3)]
    # ``fenced`` moved on to attempt 2 (requeued, as after a host loss) and waits to be placed again.
    await sql(db, "update jobs set status = 'pending', attempt = 2, host_id = null where id = $1", uuid.UUID(fenced))
    before = await job(db, uuid.UUID(fenced))
    reply = await _reports(
        client,
        cred,
        started=[_started(good), _started(fenced), _started(other)],
        exits=[_exit(fenced), _exit(good, status="failed", code=3)],
        logs=[_logs(fenced, [chunk(0, "stdout", 0, b"late\n")])],
    )
    assert _results(reply, "started") == ["applied", "stale", "applied"]
    assert _results(reply, "exits") == ["stale", "applied"]
    assert _results(reply, "logs") == ["stale"]
    stale = reply["started"][1]
    assert stale["job_id"] == fenced and stale["attempt"] == 1 and stale["current_attempt"] == 2
    assert "not current on this host" in stale["detail"]
    assert reply["exits"][0]["current_attempt"] == 2 and reply["logs"][0]["current_attempt"] == 2
    assert await job(db, uuid.UUID(fenced)) == before
    assert await _counts(db, fenced) == (0, 0)
    assert (await job(db, uuid.UUID(good)))["status"] == "failed"
    assert (await job(db, uuid.UUID(other)))["status"] == "running"


async def test_an_invalid_item_is_answered_alone_and_names_its_field(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    bad_b64 = {"seq": 0, "stream": "stdout", "offset": 0, "data_b64": "not base64!"}
    twice = [chunk(0, "stdout", 0, b"a"), chunk(0, "stdout", 1, b"b")]
    reply = await _reports(
        client,
        cred,
        started=[_started(job_id)],
        logs=[_logs(job_id, [bad_b64]), _logs(job_id, twice), _logs(job_id, [chunk(0, "stdout", 0, b"ok\n")])],
    )
    assert _results(reply, "started") == ["applied"]
    assert _results(reply, "logs") == ["invalid", "invalid", "applied"]
    assert reply["logs"][0]["field"] == "logs[0].chunks[0].data_b64"
    assert reply["logs"][1]["field"] == "logs[1].seq" and "distinct seq" in reply["logs"][1]["detail"]
    assert await _counts(db, job_id) == (1, 1)
    # A body that is not a batch at all is refused whole, naming the field.
    r = await client.post(
        "/v1/agent/reports", json={"started": [{"job_id": job_id, "attempt": 0}]}, headers=bearer(cred)
    )
    assert_problem(r, 422)
    assert field_of(r) == "started.0.attempt"
    r = await client.post("/v1/agent/reports", json={"exits": [_exit(job_id)] * 1001}, headers=bearer(cred))
    assert_problem(r, 422)
    assert field_of(r) == "exits"


async def test_jobs_of_another_host_or_another_organization_are_refused(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    stranger: Tenant = await tenant(Role.ADMIN)
    mine = (await register(client, t, "node-1"))["credential"]
    job_id = await placed_job(client, t, db)
    neighbour = (await register(client, t, "node-2"))["credential"]  # same organization, another host
    foreign = (await register(client, stranger, "node-9"))["credential"]  # another organization
    before = await snapshot(db)
    for cred, why in ((neighbour, "not placed on this host"), (foreign, "no such job")):
        reply = await _reports(
            client,
            cred,
            started=[_started(job_id)],
            logs=[_logs(job_id, [chunk(0, "stdout", 0, b"x")])],
            exits=[_exit(job_id)],
        )
        for kind in ("started", "logs", "exits"):
            assert _results(reply, kind) == ["stale"], reply
            assert why in reply[kind][0]["detail"]
    assert await snapshot(db) == before
    assert _results(await _reports(client, mine, started=[_started(job_id)]), "started") == ["applied"]


async def test_an_empty_batch_is_answered_empty(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    assert await _reports(client, cred) == {"started": [], "exits": [], "logs": []}
