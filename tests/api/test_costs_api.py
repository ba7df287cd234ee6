"""/v1/prices, /v1/usage, /v1/budgets over HTTP: a usage report that matches a hand computation,
live cost on job details, and a hard budget's refusal as problem+json."""

from __future__ import annotations

import uuid

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_jobs_api import submit
from tests.api.test_tenancy_api import assert_problem
from tests.factories import create_host
from tests.scheduling.helpers import scheduler

A100 = ("A100-80GB", 81920)
T4 = ("T4", 15360)


async def _backdate(db: Database, org_id: uuid.UUID, job_id: str, minutes: int) -> None:
    async with db.system_transaction() as conn:
        await conn.execute(
            "update allocations set created_at = now() - make_interval(mins => $2) where job_id = $1",
            uuid.UUID(job_id),
            minutes,
        )
        await conn.execute(
            "update gpu_prices set effective_from = now() - interval '1 day' where organization_id = $1", org_id
        )


async def test_prices_usage_and_live_cost(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    assert_problem(await client.get("/v1/prices", headers=member.headers), 403, "admin")
    r = await client.put("/v1/prices", json={"gpu_model": "A100-80GB", "hourly_price": "1.89"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["hourly_price"], r.json()["currency"], r.json()["current"]) == ("1.8900", "USD", True)
    await client.put("/v1/prices", json={"gpu_model": "T4", "hourly_price": 0.35}, headers=admin.headers)
    assert_problem(
        await client.put(
            "/v1/prices", json={"gpu_model": "T4", "hourly_price": "1", "currency": "EUR"}, headers=admin.headers
        ),
        409,
        "one currency",
    )
    assert sorted(p["gpu_model"] for p in (await client.get("/v1/prices", headers=admin.headers)).json()) == [
        "A100-80GB",
        "T4",
    ]

    await create_host(db, admin.org.id, gpus_spec=(A100, A100))
    await create_host(db, admin.org.id, gpus_spec=(T4,))
    a = await submit(client, admin, gpu_models=["A100"])
    b = await submit(client, member, gpu_models=["T4"], gpu_milli=500)
    c = await submit(client, member, gpu_models=["A100"])
    assert (await scheduler(db).run_once()).placed == 3
    for job, minutes in ((a, 90), (b, 120), (c, 30)):
        await _backdate(db, admin.org.id, job["id"], minutes)

    live = (await client.get(f"/v1/jobs/{a['id']}", headers=member.headers)).json()
    assert live["status"] == "allocated" and live["cost"].startswith("2.83")  # 1.5 h x 1.89, still running
    for job in (a, b, c):
        r = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin.headers)
        assert r.status_code == 200, r.text

    by_user = (await client.get("/v1/usage?by=user&since=1d", headers=member.headers)).json()
    # admin: 1.5 h x 1.89 = 2.835; member: 0.5 x 2 h x 0.35 + 0.5 h x 1.89 = 0.35 + 0.945 = 1.295
    # (each a few milliseconds more: the cancel came after the backdating)
    got = {g["key"]: (g["cost"], g["name"]) for g in by_user["groups"]}
    assert got == {
        str(admin.user.id): ("2.84", admin.user.email),
        str(member.user.id): ("1.30", member.user.email),
    }
    assert by_user["total_cost"] == "4.13" and by_user["currency"] == "USD"
    by_model = (await client.get("/v1/usage?by=model", headers=member.headers)).json()
    assert [(g["key"], g["cost"], g["gpu_hours"][:4]) for g in by_model["groups"]] == [
        ("A100-80GB", "3.78", "2.00"),
        ("T4", "0.35", "1.00"),
    ]
    assert_problem(await client.get("/v1/usage?by=colour", headers=member.headers), 422, "by must be")
    assert_problem(await client.get("/v1/usage?since=yesterday", headers=member.headers), 422, "since")


async def test_a_hard_budget_refuses_with_problem_json(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    await client.put("/v1/prices", json={"gpu_model": "A100-80GB", "hourly_price": "1.89"}, headers=admin.headers)
    assert_problem(await client.put("/v1/budgets", json={"amount": "5"}, headers=member.headers), 403, "admin")
    r = await client.put("/v1/budgets", json={"amount": "5.00", "hard": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    budget = r.json()
    assert (budget["amount"], budget["spent"], budget["scope"], budget["period"]) == (
        "5.00",
        "0.00",
        "organization",
        "month",
    )
    r = await client.post(
        "/v1/jobs",
        json={"name": "big", "command": ["true"], "gpu_models": ["A100"], "max_runtime_s": 3 * 3600},
        headers=member.headers,
    )
    assert_problem(r, 402, "this job may cost $5.67")
    body = r.json()
    assert (body["budget"], body["spent"], body["remaining"], body["estimate"], body["budget_id"]) == (
        "5.00",
        "0.00",
        "5.00",
        "5.67",
        budget["id"],
    )
    ok = await submit(client, member, gpu_models=["A100"], max_runtime_s=3600)
    assert ok["status"] == "pending"
    detail = (await client.get(f"/v1/jobs/{ok['id']}", headers=member.headers)).json()
    assert (detail["cost"], detail["cost_estimate"]) == ("0", "1.890000")
    listed = (await client.get("/v1/budgets", headers=member.headers)).json()
    assert [(x["reserved"], x["remaining"]) for x in listed] == [("1.89", "3.11")]
    assert (await client.delete(f"/v1/budgets/{budget['id']}", headers=admin.headers)).status_code == 204
