"""Idempotency-Key on POST /v1/jobs: replayed answers, a reused key refused, racing duplicates, expiry."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.services import idempotency
from tests.api.conftest import TenantFactory

JOB = {"name": "train", "gpu_count": 1, "command": ["python", "train.py"]}


async def _jobs(db: Database, org_id: uuid.UUID) -> int:
    async with db.system_transaction() as conn:
        return int(await conn.fetchval("select count(*) from jobs where organization_id = $1", org_id))


async def test_a_retry_returns_the_first_answer_and_makes_no_second_job(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t = await tenant(Role.MEMBER)
    headers = {**t.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/jobs", json=JOB, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # The same request again (keys in another order, other spacing: the same request).
    body = json.dumps(dict(reversed(list(JOB.items()))), indent=2)
    again = await client.post("/v1/jobs", content=body, headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await _jobs(db, t.org.id) == 1
    # A structured-field string names the same key.
    quoted = {**t.headers, "Idempotency-Key": f'"{headers["Idempotency-Key"]}"'}
    assert (await client.post("/v1/jobs", json=JOB, headers=quoted)).json()["id"] == first.json()["id"]
    # Without a key, or with another key, each request is a job of its own.
    assert (await client.post("/v1/jobs", json=JOB, headers=t.headers)).status_code == 201
    other = {**t.headers, "Idempotency-Key": "another-key"}
    assert (await client.post("/v1/jobs", json=JOB, headers=other)).json()["id"] != first.json()["id"]
    assert await _jobs(db, t.org.id) == 3


async def test_a_key_reused_for_another_request_is_a_422(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t = await tenant()
    headers = {**t.headers, "Idempotency-Key": "k-1"}
    assert (await client.post("/v1/jobs", json=JOB, headers=headers)).status_code == 201
    r = await client.post("/v1/jobs", json={**JOB, "gpu_count": 2}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["title"] == "Idempotency Key Reused"
    assert problem["field"] == "Idempotency-Key" and "different request" in problem["detail"]


async def test_keys_are_per_organization(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    a, b = await tenant(), await tenant()
    key = {"Idempotency-Key": "shared-key"}
    ra = await client.post("/v1/jobs", json=JOB, headers={**a.headers, **key})
    rb = await client.post("/v1/jobs", json=JOB, headers={**b.headers, **key})
    assert (ra.status_code, rb.status_code) == (201, 201)
    assert ra.json()["id"] != rb.json()["id"]
    assert "idempotent-replayed" not in rb.headers
    assert (await _jobs(db, a.org.id), await _jobs(db, b.org.id)) == (1, 1)


async def test_malformed_keys_are_refused(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t = await tenant()
    for bad in ("", "x" * 256, "with space", "é".encode()):
        r = await client.post("/v1/jobs", json=JOB, headers={**t.headers, "Idempotency-Key": bad})
        assert r.status_code == 422, (bad, r.text)


async def test_an_error_is_not_stored_so_a_retry_does_the_work(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t = await tenant()
    headers = {**t.headers, "Idempotency-Key": "after-an-error"}
    r = await client.post("/v1/jobs", json={**JOB, "gpu_milli": 0}, headers=headers)
    assert r.status_code == 422
    # The failed request left no record: the key is free for the corrected request.
    assert (await client.post("/v1/jobs", json=JOB, headers=headers)).status_code == 201


async def test_racing_duplicates_make_one_job(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t = await tenant()
    for round_ in range(3):
        headers = {**t.headers, "Idempotency-Key": f"race-{round_}"}
        replies = await asyncio.gather(*(client.post("/v1/jobs", json=JOB, headers=headers) for _ in range(8)))
        assert {r.status_code for r in replies} == {201}, [r.text for r in replies]
        assert len({r.json()["id"] for r in replies}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == 7
    assert await _jobs(db, t.org.id) == 3


async def test_expired_keys_are_purged_and_may_be_used_again(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t = await tenant()
    headers = {**t.headers, "Idempotency-Key": "old"}
    first = (await client.post("/v1/jobs", json=JOB, headers=headers)).json()
    async with db.system_transaction() as conn:
        await conn.execute("update idempotency_keys set created_at = now() - interval '25 hours'")
    # Past 24 h the key is free again, even before the purge ran: a new job.
    second = await client.post("/v1/jobs", json={**JOB, "gpu_count": 2}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first["id"]
    async with db.system_transaction() as conn:
        await conn.execute("update idempotency_keys set created_at = now() - interval '25 hours'")
    assert await idempotency.purge(db) == 1
    assert await idempotency.purge(db) == 0
