"""Deployments over HTTP: Replicate's shape, permissions, scaling through the autoscaler (scale
up, scale to zero), a rolling update with no failed prediction, and deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gpufleet.background import autoscaler
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant
from tests.execution.helpers import sql
from tests.predictions.helpers import agent, done, generator_dir, push
from tests.scheduling.helpers import settings

SETTINGS = settings(autoscaler_scale_up_after_s=0)


def url(t: Tenant, name: str = "web") -> str:
    return f"/v1/deployments/{t.org.slug}/{name}"


async def create(client: httpx.AsyncClient, t: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/deployments", json={"name": "web", "model": f"{t.org.slug}/echo", **body}, headers=t.headers
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_create_read_update_list_delete_in_replicates_shape(
    client: httpx.AsyncClient, db: Database, owner: Tenant, tenant: Any
) -> None:
    v = await push(db, owner)
    d = await create(client, owner, hardware="0.5 GPU", min_instances=0, max_instances=3)
    rel = d["current_release"]
    assert (d["owner"], d["name"], rel["number"], rel["model"], rel["version"]) == (
        owner.org.slug, "web", 1, f"{owner.org.slug}/echo", v.digest,
    )  # fmt: skip
    assert rel["configuration"] == {"hardware": "0.5 GPU", "min_instances": 0, "max_instances": 3}
    r = await client.post(
        "/v1/deployments", json={"name": "web", "model": f"{owner.org.slug}/echo"}, headers=owner.headers
    )
    assert r.status_code == 409
    r = await client.post(
        "/v1/deployments", json={"name": "model.x", "model": f"{owner.org.slug}/echo"}, headers=owner.headers
    )
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = await client.post(
        "/v1/deployments",
        json={"name": "w2", "model": f"{owner.org.slug}/echo", "min_instances": 4, "max_instances": 2},
        headers=owner.headers,
    )
    assert r.status_code == 422 and r.json()["field"] == "min_instances"

    same = await client.patch(url(owner), json={"max_instances": 2}, headers=owner.headers)
    assert same.json()["current_release"]["number"] == 1  # scaling alone is no new release
    moved = await client.patch(url(owner), json={"hardware": "1x GPU"}, headers=owner.headers)
    assert moved.json()["current_release"]["number"] == 2
    assert moved.json()["current_release"]["configuration"]["hardware"] == "1x GPU"

    member = await tenant(Role.MEMBER, owner.org)
    assert (await client.get(url(owner), headers=member.headers)).status_code == 200
    assert (await client.patch(url(owner), json={"max_instances": 1}, headers=member.headers)).status_code == 403
    stranger = await tenant()
    assert (await client.get(url(owner), headers=stranger.headers)).status_code == 404
    page = (await client.get("/v1/deployments", headers=owner.headers)).json()
    assert [x["name"] for x in page["results"]] == ["web"] and page["next"] is None

    p = (await client.post(url(owner) + "/predictions", json={"input": {"text": "hi"}}, headers=member.headers)).json()
    assert p["deployment"] == f"{owner.org.slug}/web" and p["status"] == "starting"
    assert (await client.delete(url(owner), headers=owner.headers)).status_code == 204
    gone = (await client.get(f"/v1/predictions/{p['id']}", headers=owner.headers)).json()
    assert gone["status"] == "failed" and "was deleted" in gone["error"]
    jobs = (await client.get("/v1/jobs?kind=replica", headers=owner.headers)).json()["items"]
    assert [j["status"] for j in jobs] == ["cancelled"]
    assert (await client.get(url(owner), headers=owner.headers)).status_code == 404


async def test_scale_up_on_the_queue_then_down_to_zero_when_idle(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    await create(client, owner, max_instances=3, idle_timeout_s=60)
    node = await agent(client, db, owner, n=4)
    ids = [
        (
            await client.post(url(owner) + "/predictions", json={"input": {"text": str(i)}}, headers=owner.headers)
        ).json()["id"]
        for i in range(5)
    ]
    report = await autoscaler.run_once(db, SETTINGS)
    assert len(report.started) == 2  # the cold start made one; the queue of 5 asks for the max of 3
    replicas = await node.start_replicas()
    assert len(replicas) == 3
    claimed = [c["id"] for c in (await node.claim(replicas))["predictions"]]
    assert sorted(claimed) == sorted(ids[:3])  # oldest first, one per replica
    for c in (await node.claim(replicas))["predictions"]:
        raise AssertionError(f"no free slot, yet {c} was claimed")
    for a, pid in zip(replicas, claimed, strict=False):
        await node.events(done(pid, a["replica"]["replica_id"], output="ok"))
    assert (await autoscaler.run_once(db, SETTINGS)).drained == []
    await sql(db, "update replicas set last_active_at = now() - interval '2 minutes'")
    report = await autoscaler.run_once(db, SETTINGS)
    assert len(report.drained) == 1  # two predictions still wait: two replicas stay
    await sql(db, "update predictions set status = 'canceled' where status = 'starting'")
    report = await autoscaler.run_once(db, SETTINGS)
    assert len(report.drained) == 2  # scale to zero
    told = await node.claim(replicas, free=0)
    assert sorted(told["drain"]) == sorted(a["replica"]["replica_id"] for a in replicas)
    for a in replicas:
        assert (await node.exit(a)).status_code == 204
    d = (await client.get(url(owner), headers=owner.headers)).json()
    assert d["replicas"] == [] and d["failures"] == 0


async def test_a_rolling_update_moves_to_the_new_version_with_no_failed_prediction(
    client: httpx.AsyncClient, db: Database, owner: Tenant, tmp_path: Path
) -> None:
    v1 = await push(db, owner)
    await create(client, owner, min_instances=2, max_instances=2)
    node = await agent(client, db, owner, n=4)
    await autoscaler.run_once(db, SETTINGS)
    old = await node.start_replicas()
    assert len(old) == 2
    busy = (
        await client.post(url(owner) + "/predictions", json={"input": {"text": "old"}}, headers=owner.headers)
    ).json()
    (claimed,) = (await node.claim(old[:1]))["predictions"]
    assert claimed["id"] == busy["id"]

    v2 = await push(db, owner, directory=generator_dir(tmp_path))
    r = await client.patch(url(owner), json={"version": v2.digest}, headers=owner.headers)
    assert r.json()["current_release"] == {**r.json()["current_release"], "number": 2, "version": v2.digest}
    queued_new = (await client.post(url(owner) + "/predictions", json={"input": {}}, headers=owner.headers)).json()
    assert queued_new["version"] == v2.digest
    assert (await node.claim(old))["predictions"] == []  # old replicas never take the new version's work

    seen: list[str] = []
    for _ in range(6):  # tick, start what was placed, until only new replicas remain
        await autoscaler.run_once(db, SETTINGS)
        new = await node.start_replicas()
        seen += [a["replica"]["digest"] for a in new]
        told = await node.claim(old, free=0)
        for a in old:
            if a["replica"]["replica_id"] in told["drain"]:
                if a["replica"]["replica_id"] == claimed["replica_id"]:
                    await node.events(done(busy["id"], claimed["replica_id"], output="old"))  # finishes in-flight work
                assert (await node.exit(a)).status_code == 204
        d = (await client.get(url(owner), headers=owner.headers)).json()
        if all(x["version"] == v2.digest for x in d["replicas"]) and len(d["replicas"]) == 2:
            break
    assert seen == [v2.digest, v2.digest]
    d = (await client.get(url(owner), headers=owner.headers)).json()
    assert sorted(x["status"] for x in d["replicas"]) == ["ready", "ready"] and d["failures"] == 0
    assert (await client.get(f"/v1/predictions/{busy['id']}", headers=owner.headers)).json()["status"] == "succeeded"
    statuses = {p["status"] for p in (await client.get("/v1/predictions", headers=owner.headers)).json()["results"]}
    assert "failed" not in statuses and v1.digest != v2.digest
