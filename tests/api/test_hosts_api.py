"""Join tokens, hosts, GPUs, metrics and the fleet summary through the HTTP API: success and each documented error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from gpufleet.background import liveness
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.services.allocation import allocate_gpu
from tests.api.agent_helpers import bearer, heartbeat, register, series
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem
from tests.factories import create_job, ctx_for


async def sql(db: Database, query: str, *args: object) -> object:
    async with db.system_transaction() as conn:
        return await conn.fetchval(query, *args)


async def test_join_token_lifecycle(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    r = await client.post(
        "/v1/join-tokens", json={"name": "rack 4", "max_uses": 2, "expires_in_hours": 2}, headers=t.headers
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["token"].startswith("gfj_") and created["token"].startswith(created["prefix"])
    assert (created["name"], created["max_uses"], created["uses"]) == ("rack 4", 2, 0)
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(minutes=119) < expires - datetime.now(UTC) < timedelta(minutes=121)
    listed = (await client.get("/v1/join-tokens", headers=t.headers)).json()
    assert [x["id"] for x in listed["items"]] == [created["id"]]
    assert created["token"] not in str(listed) and "token_hash" not in str(listed)
    r = await client.delete(f"/v1/join-tokens/{created['id']}", headers=t.headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert (await client.get("/v1/join-tokens", headers=t.headers)).json()["items"] == []
    everything = (await client.get("/v1/join-tokens?include_inactive=true", headers=t.headers)).json()["items"]
    assert [x["id"] for x in everything] == [created["id"]]
    # A revoked token registers nothing.
    body = {"facts": {"hostname": "h"}, "gpus": []}
    r = await client.post("/v1/agent/register", json=body, headers=bearer(created["token"]))
    assert_problem(r, 401, "was revoked")


async def test_join_token_errors(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    assert_problem(await client.post("/v1/join-tokens", json={}, headers=member.headers), 403, "admin")
    for bad in ({"max_uses": 0}, {"expires_in_hours": 0}, {"expires_in_hours": 9000}, {"token": "x"}, {"uses": 3}):
        r = await client.post("/v1/join-tokens", json=bad, headers=admin.headers)
        assert_problem(r, 422, next(iter(bad)))
    assert_problem(
        await client.delete("/v1/join-tokens/8b9a3c0e-1111-4a4a-9b9b-000000000000", headers=admin.headers), 404
    )
    # Pages: newest first, keyset cursor.
    ids = [
        (await client.post("/v1/join-tokens", json={"name": str(i)}, headers=admin.headers)).json()["id"]
        for i in range(3)
    ]
    first = (await client.get("/v1/join-tokens?limit=2", headers=admin.headers)).json()
    second = (await client.get(f"/v1/join-tokens?limit=2&cursor={first['next_cursor']}", headers=admin.headers)).json()
    assert [x["id"] for x in first["items"] + second["items"]] == ids[::-1] and second["next_cursor"] is None


async def test_hosts_and_gpus_are_listed_with_simulated_flags(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    a = await register(client, t, "node-a", 2, labels={"zone": "a"})
    b = await register(client, t, "node-b", 1)
    r = await client.get("/v1/hosts", headers=viewer.headers)
    assert r.status_code == 200
    hosts = r.json()["items"]
    assert [h["name"] for h in hosts] == ["node-a", "node-b"]
    assert all(h["simulated"] and h["status"] == "ready" for h in hosts)
    assert hosts[0]["labels"] == {"zone": "a"} and "credential_hash" not in r.text and a["credential"] not in r.text
    detail = (await client.get(f"/v1/hosts/{a['host_id']}", headers=viewer.headers)).json()
    assert [g["uuid"] for g in detail["gpus"]] == ["GPU-node-a-0", "GPU-node-a-1"]
    assert all(g["simulated"] and g["foreign_usage"] is None for g in detail["gpus"])
    gpus = (await client.get("/v1/gpus", headers=viewer.headers)).json()["items"]
    assert [g["uuid"] for g in gpus] == ["GPU-node-a-0", "GPU-node-a-1", "GPU-node-b-0"]
    # Filters and pages.
    only_b = (await client.get(f"/v1/gpus?host_id={b['host_id']}", headers=viewer.headers)).json()["items"]
    assert [g["uuid"] for g in only_b] == ["GPU-node-b-0"]
    assert len((await client.get("/v1/gpus?model=a100", headers=viewer.headers)).json()["items"]) == 3
    assert (await client.get("/v1/gpus?model=H100", headers=viewer.headers)).json()["items"] == []
    assert (await client.get("/v1/gpus?model=%25", headers=viewer.headers)).json()["items"] == []  # not a wildcard
    assert (await client.get("/v1/gpus?status=unhealthy", headers=viewer.headers)).json()["items"] == []
    page1 = (await client.get("/v1/gpus?limit=2", headers=viewer.headers)).json()
    page2 = (await client.get(f"/v1/gpus?limit=2&cursor={page1['next_cursor']}", headers=viewer.headers)).json()
    assert [g["uuid"] for g in page1["items"] + page2["items"]] == [g["uuid"] for g in gpus]
    hp = (await client.get("/v1/hosts?limit=1", headers=viewer.headers)).json()
    hp2 = (await client.get(f"/v1/hosts?limit=1&cursor={hp['next_cursor']}", headers=viewer.headers)).json()
    assert [h["name"] for h in hp["items"] + hp2["items"]] == ["node-a", "node-b"]
    one = (await client.get(f"/v1/gpus/{gpus[0]['id']}", headers=viewer.headers)).json()
    assert one["uuid"] == "GPU-node-a-0" and one["host_id"] == a["host_id"]
    assert (await client.get("/v1/hosts?status=draining", headers=viewer.headers)).json()["items"] == []
    assert_problem(await client.get("/v1/hosts?status=bogus", headers=viewer.headers), 422, "status")
    assert_problem(await client.get("/v1/gpus?limit=201", headers=viewer.headers), 422, "limit")
    assert_problem(await client.get(f"/v1/hosts/{t.org.id}", headers=viewer.headers), 404)
    assert_problem(await client.get(f"/v1/gpus/{t.org.id}", headers=viewer.headers), 404)


async def test_host_admin_operations(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    reg = await register(client, t)
    h = reg["host_id"]
    assert_problem(await client.post(f"/v1/hosts/{h}/drain", headers=viewer.headers), 403, "admin")
    r = await client.post(f"/v1/hosts/{h}/drain", json={"reason": "kernel upgrade"}, headers=t.headers)
    assert (r.status_code, r.json()["status"], r.json()["status_reason"]) == (200, "draining", "kernel upgrade")
    assert_problem(
        await client.post(f"/v1/hosts/{h}/maintenance", json={"on": False}, headers=t.headers), 409, "draining"
    )
    assert (await client.post(f"/v1/hosts/{h}/undrain", headers=t.headers)).json()["status"] == "ready"
    assert (await client.post(f"/v1/hosts/{h}/undrain", headers=t.headers)).json()["status"] == "ready"  # idempotent
    r = await client.post(f"/v1/hosts/{h}/maintenance", headers=t.headers)  # no body: on
    assert r.json()["status"] == "maintenance"
    assert (await client.post(f"/v1/hosts/{h}/maintenance", json={"on": False}, headers=t.headers)).json()[
        "status"
    ] == "ready"
    assert_problem(await client.post(f"/v1/hosts/{h}/maintenance", json={"on": "maybe"}, headers=t.headers), 422, "on")
    # Removal waits for running work.
    job = await create_job(db, t.org.id)
    await allocate_gpu(db, ctx_for(t.org.id), gpu_id=reg["gpus"][0]["id"], job_id=job.id)
    assert_problem(await client.delete(f"/v1/hosts/{h}", headers=t.headers), 409, "1 allocated or running job")
    await sql(db, "update jobs set status = 'succeeded' where id = $1", job.id)
    await sql(db, "update allocations set released_at = now() where job_id = $1", job.id)
    r = await client.delete(f"/v1/hosts/{h}", headers=t.headers)
    assert r.status_code == 200 and r.json()["removed_at"] and r.json()["revoked_at"]
    assert (await client.get("/v1/hosts", headers=t.headers)).json()["items"] == []
    assert [
        x["id"] for x in (await client.get("/v1/hosts?include_removed=true", headers=t.headers)).json()["items"]
    ] == [h]
    assert (await client.get(f"/v1/hosts/{h}", headers=t.headers)).json()["gpus"][0]["status"] == "offline"
    assert_problem(await client.delete(f"/v1/hosts/{h}", headers=t.headers), 404)
    assert_problem(await heartbeat(client, reg["credential"]), 401, "host credential revoked")


async def test_revoked_host_gets_401_and_can_register_again(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    reg = await register(client, t)
    r = await client.post(f"/v1/hosts/{reg['host_id']}/revoke", headers=t.headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = await heartbeat(client, reg["credential"])
    assert_problem(r, 401, "host credential revoked")
    assert r.headers["www-authenticate"].startswith("Bearer")
    again = await register(client, t)  # same name: re-registered in place
    assert again["host_id"] == reg["host_id"] and again["reregistered"] and again["credential"] != reg["credential"]
    assert (await heartbeat(client, again["credential"])).status_code == 200
    assert_problem(await heartbeat(client, reg["credential"]), 401, "unknown host credential")


async def test_gpu_operations_and_health(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    reg = await register(client, t)
    gpu = reg["gpus"][0]["id"]
    assert_problem(await client.post(f"/v1/gpus/{gpu}/clear-health", headers=t.headers), 409, "not unhealthy")
    r = await client.post(f"/v1/gpus/{gpu}/maintenance", json={"reason": "reseat"}, headers=t.headers)
    assert (r.json()["status"], r.json()["status_reason"]) == ("maintenance", "reseat")
    assert (await client.post(f"/v1/gpus/{gpu}/maintenance", json={"on": False}, headers=t.headers)).json()[
        "status"
    ] == "available"
    assert_problem(await client.post(f"/v1/gpus/{gpu}/maintenance", json={"on": False}, headers=t.headers), 409)
    # A hot GPU turns unhealthy through a heartbeat; an admin clears it.
    hot = series("GPU-node-1-0", 2, temperature_c=[70.0, 97.0])
    assert (await heartbeat(client, reg["credential"], metrics=[hot])).status_code == 200
    got = (await client.get(f"/v1/gpus/{gpu}", headers=t.headers)).json()
    assert got["status"] == "unhealthy" and "97" in got["status_reason"]
    assert [g["id"] for g in (await client.get("/v1/gpus?status=unhealthy", headers=t.headers)).json()["items"]] == [
        gpu
    ]
    assert (await client.post(f"/v1/gpus/{gpu}/clear-health", headers=t.headers)).json()["status"] == "available"
    # Memory in use on a GPU gpufleet holds free: the foreign usage flag is visible.
    busy = series("GPU-node-1-1", 1, memory_used_mb=[30000], process_count=[2])
    assert (await heartbeat(client, reg["credential"], metrics=[busy])).status_code == 200
    g1 = (await client.get(f"/v1/gpus/{reg['gpus'][1]['id']}", headers=t.headers)).json()
    assert "30000 MiB in use and 2 processes" in g1["foreign_usage"]
    summary = (await client.get("/v1/fleet/summary", headers=t.headers)).json()
    assert summary["gpus_with_foreign_usage"] == 1


async def test_metrics_raw_and_bucketed(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    reg = await register(client, t, n=1)
    gpu = reg["gpus"][0]["id"]
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    util = [float(i % 60) + (40 if i >= 60 else 0) for i in range(120)]
    body = series("GPU-node-1-0", 120, start=start, utilization_pct=util)
    r = await heartbeat(client, reg["credential"], n=1, metrics=[body])
    assert r.status_code == 200 and r.json()["samples_received"] == 120
    q = {"start": start.isoformat(), "end": (start + timedelta(minutes=2)).isoformat()}
    raw = (await client.get(f"/v1/gpus/{gpu}/metrics", params=q, headers=viewer.headers)).json()
    assert (raw["bucket"], raw["source"], raw["truncated"], len(raw["points"])) == ("raw", "raw", False, 120)
    assert raw["points"][65]["utilization_pct"] == 45.0
    per_min = (
        await client.get(f"/v1/gpus/{gpu}/metrics", params={**q, "bucket": "1m", "agg": "max"}, headers=viewer.headers)
    ).json()
    assert [(p["utilization_pct"], p["samples"]) for p in per_min["points"]] == [(59.0, 60), (99.0, 60)]
    avg = (await client.get(f"/v1/gpus/{gpu}/metrics", params={**q, "bucket": "1m"}, headers=viewer.headers)).json()
    assert avg["points"][0]["utilization_pct"] == 29.5
    # Default range: the last hour.
    assert len((await client.get(f"/v1/gpus/{gpu}/metrics", headers=viewer.headers)).json()["points"]) == 120
    assert_problem(
        await client.get(f"/v1/gpus/{gpu}/metrics", params={"bucket": "2m"}, headers=viewer.headers), 422, "bucket"
    )
    bad = {"start": q["end"], "end": q["start"]}
    assert_problem(await client.get(f"/v1/gpus/{gpu}/metrics", params=bad, headers=viewer.headers), 422, "end")
    naive = {"end": "2030-01-01T00:00:00"}
    assert_problem(await client.get(f"/v1/gpus/{gpu}/metrics", params=naive, headers=viewer.headers), 422, "time zone")
    assert_problem(await client.get(f"/v1/gpus/{t.org.id}/metrics", headers=viewer.headers), 404)
    summary = (await client.get("/v1/fleet/summary?window_minutes=10", headers=viewer.headers)).json()
    assert summary["gpus_total"] == 1 and summary["gpus_simulated"] == 1 and summary["samples_in_window"] == 120
    assert summary["gpus_by_model"] == [{"model": "A100-80GB", "count": 1, "simulated": 1}]
    assert summary["hosts_by_status"] == {"ready": 1} and summary["avg_utilization_pct"] == 49.5
    assert_problem(await client.get("/v1/fleet/summary?window_minutes=0", headers=viewer.headers), 422)


async def test_liveness_through_the_api_view(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    t: Tenant = await tenant(Role.OWNER)
    reg = await register(client, t)
    h = reg["host_id"]

    async def status() -> str:
        return str((await client.get(f"/v1/hosts/{h}", headers=t.headers)).json()["status"])

    await sql(db, "update hosts set last_heartbeat_at = now() - interval '49 seconds' where id = $1", h)
    assert await liveness.run_once(db, timeout_s=50) == []
    assert await status() == "ready"
    await sql(db, "update hosts set last_heartbeat_at = now() - interval '51 seconds' where id = $1", h)
    assert [str(x.host_id) for x in await liveness.run_once(db, timeout_s=50)] == [h]
    assert await status() == "unreachable"
    detail = (await client.get(f"/v1/hosts/{h}", headers=t.headers)).json()
    assert detail["status_reason"] == "no heartbeat for 50 s"
    r = await heartbeat(client, reg["credential"])
    assert r.status_code == 200 and r.json()["host_status"] == "ready"
    assert await status() == "ready"
