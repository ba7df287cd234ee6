"""The dashboard's reads: /v1/fleet (every host and GPU with its latest sample), /v1/fleet/metrics
(series over many GPUs) and /v1/queue (pending jobs in scheduling order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import heartbeat, register, series
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem


async def test_fleet_lists_hosts_and_gpus_with_their_latest_sample(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    other: Tenant = await tenant(Role.OWNER)
    b = await register(client, t, name="node-b", n=2)
    a = await register(client, t, name="node-a", n=1)
    await register(client, other, name="elsewhere", n=1)
    old = datetime.now(UTC) - timedelta(minutes=30)
    samples = [
        series("GPU-node-b-0", 3, utilization_pct=[10.0, 20.0, 30.0], memory_used_mb=[100, 200, 300]),
        series("GPU-node-b-1", 1, start=old, utilization_pct=[99.0]),  # too old to be "now"
    ]
    assert (await heartbeat(client, b["credential"], name="node-b", metrics=samples)).status_code == 200
    r = await client.get("/v1/fleet", headers=viewer.headers)
    assert r.status_code == 200, r.text
    hosts = r.json()["hosts"]
    assert [h["name"] for h in hosts] == ["node-a", "node-b"]  # by name; nothing of the other org
    assert [g["index"] for g in hosts[1]["gpus"]] == [0, 1] and len(hosts[0]["gpus"]) == 1
    g0, g1 = hosts[1]["gpus"]
    assert (g0["utilization_pct"], g0["memory_used_mb"], g0["temperature_c"]) == (30.0, 300.0, 60.0)
    assert g0["sampled_at"] is not None and g0["status"] == "available" and g0["memory_mb"] > 0
    assert g1["utilization_pct"] is None and g1["sampled_at"] is None
    assert hosts[0]["id"] == a["host_id"] and hosts[0]["gpus"][0]["utilization_pct"] is None
    assert (await client.get("/v1/fleet")).status_code == 401


async def test_fleet_metrics_aggregate_over_the_matching_gpus(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    reg = await register(client, t, n=2)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    body = [
        series("GPU-node-1-0", 60, start=start, utilization_pct=[20.0] * 60),
        series("GPU-node-1-1", 60, start=start, utilization_pct=[60.0] * 30 + [100.0] * 30),
    ]
    assert (await heartbeat(client, reg["credential"], metrics=body)).status_code == 200
    q = {"start": start.isoformat(), "end": (start + timedelta(minutes=2)).isoformat(), "bucket": "1m"}
    r = await client.get("/v1/fleet/metrics", params=q, headers=viewer.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["gpus"] == 2 and [(p["utilization_pct"], p["samples"]) for p in got["points"]] == [(50.0, 120)]
    peak = (await client.get("/v1/fleet/metrics", params={**q, "agg": "max"}, headers=viewer.headers)).json()
    assert peak["points"][0]["utilization_pct"] == 100.0
    one = (
        await client.get("/v1/fleet/metrics", params={**q, "model": "nothing-like-it"}, headers=viewer.headers)
    ).json()
    assert (one["gpus"], one["points"]) == (0, [])
    host = {**q, "host_id": reg["host_id"], "model": "a100"}
    assert (await client.get("/v1/fleet/metrics", params=host, headers=viewer.headers)).json()["gpus"] == 2
    assert_problem(
        await client.get("/v1/fleet/metrics", params={**q, "bucket": "raw"}, headers=viewer.headers), 422, "bucket"
    )
    ancient = {**q, "start": "2001-01-01T00:00:00Z"}
    assert_problem(await client.get("/v1/fleet/metrics", params=ancient, headers=viewer.headers), 422, "start")
    backwards = {**q, "start": q["end"], "end": q["start"]}
    assert_problem(await client.get("/v1/fleet/metrics", params=backwards, headers=viewer.headers), 422, "end")


@pytest.mark.parametrize("app_settings", [{"metrics_max_points": 2, "metrics_retention_days": 1}])
async def test_metric_reads_are_bounded_by_the_settings(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    reg = await register(client, t, n=1)
    assert (await heartbeat(client, reg["credential"], n=1, samples=5)).status_code == 200
    gpu_id = (await client.get("/v1/gpus", headers=t.headers)).json()["items"][0]["id"]
    raw = (await client.get(f"/v1/gpus/{gpu_id}/metrics", headers=t.headers)).json()
    assert (len(raw["points"]), raw["truncated"]) == (2, True)  # metrics_max_points
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    three = {"start": (now - timedelta(minutes=3)).isoformat(), "end": now.isoformat(), "bucket": "1m"}
    assert_problem(await client.get("/v1/fleet/metrics", params=three, headers=t.headers), 422, "bucket")
    ago = now - timedelta(days=2)
    two_days = {"start": ago.isoformat(), "end": (ago + timedelta(hours=1)).isoformat(), "bucket": "1h"}
    old = (await client.get(f"/v1/gpus/{gpu_id}/metrics", params=two_days, headers=t.headers)).json()
    assert old["source"] == "hourly"  # before metrics_retention_days: the rollups
    assert_problem(await client.get("/v1/fleet/metrics", params=two_days, headers=t.headers), 422, "start")


async def test_queue_is_in_scheduling_order_with_reasons(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    viewer: Tenant = await tenant(Role.VIEWER, t.org)
    ids = []
    for name, priority in (("low", 0), ("high", 10), ("low-later", 0), ("mid", 5)):
        r = await client.post(
            "/v1/jobs", json={"name": name, "command": ["true"], "priority": priority}, headers=t.headers
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    await client.post(f"/v1/jobs/{ids[2]}/cancel", headers=t.headers)
    r = await client.get("/v1/queue", headers=viewer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["pending"] == 3 and [j["name"] for j in r.json()["items"]] == ["high", "mid", "low"]
    first = (await client.get("/v1/queue", params={"limit": 1}, headers=viewer.headers)).json()
    assert first["pending"] == 3 and [j["name"] for j in first["items"]] == ["high"]
    assert_problem(await client.get("/v1/queue", params={"limit": 0}, headers=viewer.headers), 422, "limit")
    other: Tenant = await tenant(Role.OWNER)
    assert (await client.get("/v1/queue", headers=other.headers)).json() == {"pending": 0, "items": []}
