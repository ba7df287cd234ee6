"""/v1/quotas over HTTP, and quotas seen end to end through job pending reasons."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_jobs_api import field_of, submit
from tests.api.test_tenancy_api import assert_problem
from tests.factories import create_host
from tests.scheduling.helpers import assert_clean, scheduler

A100 = ("A100-80GB", 81920)
T4 = ("T4", 15360)


async def test_set_list_replace_delete(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    viewer: Tenant = await tenant(Role.VIEWER, admin.org)
    r = await client.put("/v1/quotas", json={"gpu_model": "A100-80GB", "max_gpus": 4}, headers=admin.headers)
    assert r.status_code == 200, r.text
    a100 = r.json()
    assert (a100["gpu_model"], a100["max_gpus"], a100["used_gpus"]) == ("A100-80GB", 4, 0.0)
    overall = (await client.put("/v1/quotas", json={"max_gpus": 10}, headers=admin.headers)).json()
    assert overall["gpu_model"] is None
    # PUT replaces the quota of the same model (it is keyed by model, not by id).
    r = await client.put("/v1/quotas", json={"gpu_model": "A100-80GB", "max_gpus": 2}, headers=admin.headers)
    assert r.json()["id"] == a100["id"] and r.json()["max_gpus"] == 2
    listed = (await client.get("/v1/quotas", headers=viewer.headers)).json()
    assert [(q["gpu_model"], q["max_gpus"]) for q in listed] == [(None, 10), ("A100-80GB", 2)]
    r = await client.delete(f"/v1/quotas/{a100['id']}", headers=admin.headers)
    assert r.status_code == 204 and r.content == b""
    assert [q["id"] for q in (await client.get("/v1/quotas", headers=viewer.headers)).json()] == [overall["id"]]
    assert_problem(await client.delete(f"/v1/quotas/{a100['id']}", headers=admin.headers), 404)


async def test_only_admins_change_quotas_and_other_orgs_see_404(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    stranger: Tenant = await tenant(Role.OWNER)
    quota = (await client.put("/v1/quotas", json={"max_gpus": 1}, headers=admin.headers)).json()
    assert_problem(await client.put("/v1/quotas", json={"max_gpus": 5}, headers=member.headers), 403, "admin")
    assert_problem(await client.delete(f"/v1/quotas/{quota['id']}", headers=member.headers), 403, "admin")
    assert (await client.get("/v1/quotas", headers=member.headers)).status_code == 200
    assert_problem(await client.delete(f"/v1/quotas/{quota['id']}", headers=stranger.headers), 404)
    assert (await client.get("/v1/quotas", headers=stranger.headers)).json() == []
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select max_gpus from quotas where id = $1", uuid.UUID(quota["id"])) == 1


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"gpu_model": "!!!", "max_gpus": 1}, "gpu_model"),
    ({"gpu_model": "", "max_gpus": 1}, "gpu_model"),
    ({"max_gpus": -1}, "max_gpus"),
    ({"max_gpus": 1_000_001}, "max_gpus"),
    ({"max_gpus": "3"}, "max_gpus"),
    ({}, "max_gpus"),
    ({"max_gpus": 1, "id": str(uuid.uuid4())}, "id"),
]


@pytest.mark.parametrize(("body", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
async def test_invalid_quotas_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: TenantFactory, body: dict[str, Any], field: str
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    r = await client.put("/v1/quotas", json=body, headers=admin.headers)
    assert_problem(r, 422)
    assert field_of(r) == field
    assert (await client.get("/v1/quotas", headers=admin.headers)).json() == []


async def test_jobs_over_quota_wait_with_the_reason_and_run_when_it_rises(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    await create_host(db, admin.org.id, gpus_spec=(A100,) * 4 + (T4,) * 2)
    quota = (
        await client.put("/v1/quotas", json={"gpu_model": "A100-80GB", "max_gpus": 2}, headers=admin.headers)
    ).json()
    first = await submit(client, admin, gpu_count=2, gpu_models=["A100"])
    second = await submit(client, admin, gpu_models=["A100"])
    half = await submit(client, admin, gpu_milli=500, gpu_models=["T4"])  # another model: not held back
    assert (await scheduler(db).run_once()).placed == 2
    got = (await client.get(f"/v1/jobs/{second['id']}", headers=admin.headers)).json()
    assert got["status"] == "pending"
    assert got["pending_reason"] == "quota: 2 of 2 A100-80GB GPUs in use"
    assert (await client.get(f"/v1/jobs/{first['id']}", headers=admin.headers)).json()["status"] == "allocated"
    assert (await client.get(f"/v1/jobs/{half['id']}", headers=admin.headers)).json()["status"] == "allocated"
    usage = {q["gpu_model"]: q["used_gpus"] for q in (await client.get("/v1/quotas", headers=admin.headers)).json()}
    assert usage == {"A100-80GB": 2.0}

    overall = (await client.put("/v1/quotas", json={"max_gpus": 2}, headers=admin.headers)).json()
    assert overall["used_gpus"] == 2.5  # the half T4 counts half
    await client.put("/v1/quotas", json={"gpu_model": "A100-80GB", "max_gpus": 3}, headers=admin.headers)
    await scheduler(db).run_once()
    got = (await client.get(f"/v1/jobs/{second['id']}", headers=admin.headers)).json()
    assert (got["status"], got["pending_reason"]) == ("pending", "quota: 2.5 of 2 GPUs in use")

    await client.delete(f"/v1/quotas/{overall['id']}", headers=admin.headers)
    await scheduler(db).run_once()
    got = (await client.get(f"/v1/jobs/{second['id']}", headers=admin.headers)).json()
    assert (got["status"], got["pending_reason"]) == ("allocated", None)
    usage = {q["id"]: q["used_gpus"] for q in (await client.get("/v1/quotas", headers=admin.headers)).json()}
    assert usage == {quota["id"]: 3.0}
    await assert_clean(db)
