"""/v1/agent/*: credentials, refused reports that change nothing, and isolation between organizations."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import bearer, facts, gpus, heartbeat, join_token, register, series
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_matrix import _fingerprint
from tests.api.test_tenancy_api import assert_problem


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"heartbeat_max_samples": 50}


async def _state(db: Database, host_id: str) -> tuple[Any, ...]:
    async with db.system_transaction() as conn:
        row = await conn.fetchrow(
            """select h.last_heartbeat_at, h.updated_at, h.status,
                      (select count(*) from gpu_metrics m join gpu_resources g on g.id = m.gpu_id
                        where g.host_id = h.id) as samples,
                      (select array_agg((g.uuid, g.status, g.version) order by g.uuid) from gpu_resources g
                        where g.host_id = h.id) as gpus
                 from hosts h where h.id = $1""",
            uuid.UUID(host_id),
        )
    return tuple(row)


async def test_register_and_heartbeat(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    reg = await register(client, t, "gpu-7", 2, labels={"rack": "4"})
    assert reg["credential"].startswith("gfh_") and reg["name"] == "gpu-7" and reg["simulated"]
    assert reg["organization_id"] == str(t.org.id) and reg["heartbeat_interval_s"] == 10.0
    assert [g["uuid"] for g in reg["gpus"]] == ["GPU-gpu-7-0", "GPU-gpu-7-1"] and not reg["reregistered"]
    r = await heartbeat(client, reg["credential"], "gpu-7", 2, samples=5, facts=facts("gpu-7", driver_version="555.1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["host_id"], body["host_status"], body["samples_received"]) == (reg["host_id"], "ready", 10)
    assert body["heartbeat_interval_s"] == 10.0 and body["instructions"] == {"kill": []} and body["server_time"]
    host = (await client.get(f"/v1/hosts/{reg['host_id']}", headers=t.headers)).json()
    assert host["driver_version"] == "555.1" and host["labels"] == {"rack": "4"}
    # A retried heartbeat (same samples) stores nothing twice.
    same = {"gpus": gpus("gpu-7", 1), "metrics": [series("GPU-gpu-7-0", 2)]}
    for _ in range(2):
        assert (
            await client.post("/v1/agent/heartbeat", json=same, headers=bearer(reg["credential"]))
        ).status_code == 200
    gpu0 = reg["gpus"][0]["id"]
    assert len((await client.get(f"/v1/gpus/{gpu0}/metrics", headers=t.headers)).json()["points"]) == 7
    # A GPU no longer listed goes offline.
    gpu1 = (await client.get(f"/v1/gpus/{reg['gpus'][1]['id']}", headers=t.headers)).json()
    assert (gpu1["status"], gpu1["status_reason"]) == ("offline", "not reported by host")


async def test_agent_credentials_are_checked(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    body = {"facts": facts("h1"), "gpus": gpus("h1", 1)}
    assert_problem(await client.post("/v1/agent/register", json=body), 401, "Bearer gfj_")
    assert_problem(await client.post("/v1/agent/register", json=body, headers=t.headers), 401, "not an API key")
    assert_problem(
        await client.post("/v1/agent/register", json=body, headers=bearer("gfj_nonsense")), 401, "malformed join token"
    )
    token = await join_token(client, t, max_uses=1)
    r = await client.post("/v1/agent/register", json=body, headers=bearer(token))
    assert r.status_code == 201 and r.json()["name"] == "h1"  # default name: the hostname
    assert_problem(await client.post("/v1/agent/register", json=body, headers=bearer(token)), 401, "used 1 of 1 times")
    token2 = await join_token(client, t)
    assert_problem(
        await client.post("/v1/agent/register", json=body, headers=bearer(token2)), 409, "already registered"
    )
    # API keys, join tokens and garbage are not host credentials.
    for secret in (t.key, token2, "gfh_short"):
        assert_problem(await heartbeat(client, secret, "h1", 1), 401)
    assert_problem(await client.post("/v1/agent/heartbeat", json={"gpus": []}), 401)
    # Bodies are validated like every request: unknown and server-owned fields are refused.
    for bad in ({**body, "organization_id": str(t.org.id)}, {**body, "facts": {"hostname": ""}}, {"facts": facts()}):
        assert_problem(await client.post("/v1/agent/register", json=bad, headers=bearer(token2)), 422)


async def test_malformed_and_oversized_reports_change_nothing(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    reg = await register(client, t, n=2)
    cred = reg["credential"]
    assert (await heartbeat(client, cred, samples=2)).status_code == 200
    before = await _state(db, reg["host_id"])
    ok = series("GPU-node-1-0", 3)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"gpus": gpus(), "metrics": [{**ok, "utilization_pct": [1.0, 2.0]}]}, 422, "2 values for 3 timestamps"),
        (
            {"gpus": gpus(), "metrics": [{**ok, "utilization_pct": [1.0, 101.0, 3.0]}]},
            422,
            "metrics[0].utilization_pct[1]",
        ),
        (
            {"gpus": gpus(), "metrics": [ok, series("GPU-node-1-1", 2, power_w=[1.0, -5.0])]},
            422,
            "metrics[1].power_w[1]",
        ),
        ({"gpus": gpus(), "metrics": [series("GPU-other-9", 2)]}, 422, "metrics[0].uuid"),
        ({"gpus": gpus(), "metrics": [{**ok, "ts": ["2020-01-01T00:00:00+00:00"] * 3}]}, 422, "metrics[0].ts[0]"),
        (
            {"gpus": gpus(), "metrics": [{**ok, "ts": ["2030-01-01T00:00:00"] * 3}]},
            422,
            "metrics[0].ts[0] must be a timezone-aware",
        ),
        ({"gpus": gpus() + gpus()[:1]}, 422, "listed twice"),
        ({"gpus": gpus(), "metrics": [series("GPU-node-1-0", 30), series("GPU-node-1-1", 30)]}, 422, "at most 50"),
        ({"gpus": gpus(), "status": "ready"}, 422, "status"),
        ({"metrics": [ok]}, 422, "gpus"),
        ({"gpus": gpus(), "facts": {"hostname": "x" * 300}}, 422, "hostname"),
    ]
    for body, status, text in cases:
        r = await client.post("/v1/agent/heartbeat", json=body, headers=bearer(cred))
        assert_problem(r, status, text)
    r = await client.post(
        "/v1/agent/heartbeat", content=b"{not json", headers={**bearer(cred), "content-type": "application/json"}
    )
    assert_problem(r, 422)
    # Over the 1 MiB body limit: refused before it is read whole.
    huge = {"gpus": gpus(), "metrics": [series("GPU-node-1-0", 3)], "pad": "x" * (1024 * 1024)}
    assert_problem(await client.post("/v1/agent/heartbeat", json=huge, headers=bearer(cred)), 413)
    assert await _state(db, reg["host_id"]) == before


async def test_one_organizations_agent_cannot_touch_anothers_hosts(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    a: Tenant = await tenant(Role.OWNER)
    b: Tenant = await tenant(Role.OWNER)
    reg_a = await register(client, a, "node-a", 1)
    reg_b = await register(client, b, "node-b", 2)
    assert (await heartbeat(client, reg_b["credential"], "node-b", 2, samples=3)).status_code == 200
    before = await _fingerprint(db, b.org.id)
    state_b = await _state(db, reg_b["host_id"])
    cred_a = reg_a["credential"]
    # Samples for B's GPUs, by uuid: refused, A's host neither has nor reports them.
    r = await client.post(
        "/v1/agent/heartbeat",
        json={"gpus": gpus("node-a", 1), "metrics": [series("GPU-node-b-0", 3)]},
        headers=bearer(cred_a),
    )
    assert_problem(r, 422, "neither has nor reports")
    # Reporting B's GPU uuids as its own only adds GPUs to A's host, never touches B's.
    r = await client.post(
        "/v1/agent/heartbeat",
        json={"gpus": gpus("node-a", 1) + gpus("node-b", 2), "metrics": [series("GPU-node-b-1", 3)]},
        headers=bearer(cred_a),
    )
    assert r.status_code == 200 and r.json()["gpus_added"] == 2
    a_gpus = (await client.get(f"/v1/gpus?host_id={reg_a['host_id']}", headers=a.headers)).json()["items"]
    assert sorted(g["uuid"] for g in a_gpus) == ["GPU-node-a-0", "GPU-node-b-0", "GPU-node-b-1"]
    # Registering with A's token under B's host name creates a host in A, not in B.
    token_a = await join_token(client, a)
    body = {"name": "node-b", "facts": facts("node-b"), "gpus": gpus("node-b", 2)}
    r = await client.post("/v1/agent/register", json=body, headers=bearer(token_a))
    assert (
        r.status_code == 201
        and r.json()["organization_id"] == str(a.org.id)
        and r.json()["host_id"] != reg_b["host_id"]
    )
    # B's hosts, GPUs, samples and events are exactly as they were; B's views show none of A's.
    assert await _fingerprint(db, b.org.id) == before
    assert await _state(db, reg_b["host_id"]) == state_b
    assert [h["name"] for h in (await client.get("/v1/hosts", headers=b.headers)).json()["items"]] == ["node-b"]
    assert_problem(await client.get(f"/v1/hosts/{reg_a['host_id']}", headers=b.headers), 404)


async def test_a_remembered_credential_dies_with_revocation_and_re_registration(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    reg = await register(client, t)
    assert (await heartbeat(client, reg["credential"])).status_code == 200  # now remembered by the server
    assert (await client.post(f"/v1/hosts/{reg['host_id']}/revoke", headers=t.headers)).status_code == 200
    again = await register(client, t)  # same host, new credential, no longer revoked
    assert again["host_id"] == reg["host_id"]
    # Replaced: refused at once, as never issued (its hash is no longer the host's).
    assert_problem(await heartbeat(client, reg["credential"]), 401, "replaced when its host registered again")
    assert (await heartbeat(client, again["credential"])).status_code == 200
