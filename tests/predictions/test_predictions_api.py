"""Predictions over HTTP, with an agent driven by hand through its protocol: the queue, claims,
events, cancels, `Prefer: wait`, cold starts and the failure of a replica's in-flight work."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gpufleet.db.pool import Database
from tests.api.conftest import Tenant
from tests.predictions.helpers import agent, done, push


def model_url(t: Tenant, name: str = "echo") -> str:
    return f"/v1/models/{t.org.slug}/{name}/predictions"


async def predict(client: httpx.AsyncClient, t: Tenant, inp: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = await client.post(model_url(t), json={"input": inp, **kw.pop("body", {})}, headers={**t.headers, **kw})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_prediction_is_queued_claimed_and_finished_by_a_replica(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    v = await push(db, owner)
    node = await agent(client, db, owner)
    p = await predict(client, owner, {"text": "hi", "repeat": 2})
    assert p["status"] == "starting" and p["version"] == v.digest and p["model"] == f"{owner.org.slug}/echo"
    assert p["input"] == {"text": "hi", "repeat": 2, "case": "as-is", "reverse": False, "separator": " "}
    assert (p["urls"]["get"].endswith(f"/v1/predictions/{p['id']}") and "stream" not in p["urls"]) or not p["urls"][
        "stream"
    ]

    # The cold start queued a replica job: hidden from the job list, shown with kind=replica.
    jobs = (await client.get("/v1/jobs", headers=owner.headers)).json()["items"]
    assert jobs == []
    replicas = (await client.get("/v1/jobs?kind=replica", headers=owner.headers)).json()["items"]
    assert len(replicas) == 1 and replicas[0]["kind"] == "replica" and replicas[0]["retry"]["on_host_loss"] is False

    (a,) = await node.start_replicas(environment_s=1.5, environment_cached=False, setup_s=0.25)
    assert a["replica"]["digest"] == v.digest and a["replica"]["predict_ref"] == "predict.py:Predictor"
    claim = await node.claim([a])
    assert [c["id"] for c in claim["predictions"]] == [p["id"]] and claim["cancel"] == [] == claim["drain"]
    assert claim["predictions"][0]["input"]["repeat"] == 2
    got = (await client.get(f"/v1/predictions/{p['id']}", headers=owner.headers)).json()
    assert got["status"] == "processing" and got["started_at"] is not None
    assert got["metrics"]["cold_start"] is True and got["metrics"]["setup_time"] == 0.25
    assert got["metrics"]["environment_time"] == 1.5 and got["metrics"]["queue_time"] >= 0

    rid = a["replica"]["replica_id"]
    results = await node.events(
        {"prediction_id": p["id"], "replica_id": rid, "type": "logs", "text": "working\n"},
        done(p["id"], rid, output="hi hi", predict_time=0.01),
    )
    assert [r["ok"] for r in results] == [True, True]
    got = (await client.get(f"/v1/predictions/{p['id']}", headers=owner.headers)).json()
    assert (got["status"], got["output"], got["logs"], got["error"]) == ("succeeded", "hi hi", "working\n", None)
    assert got["metrics"]["predict_time"] == 0.01 and got["completed_at"] is not None

    feed = await client.get("/v1/events?type=prediction", headers=owner.headers)
    types = [e["type"] for e in feed.json()["events"]]
    assert types == ["prediction.created", "prediction.started", "prediction.succeeded"]


async def test_input_is_checked_against_the_schema_before_anything_is_written(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    for inp, field in (
        ({"repeat": 2}, "input.text"),
        ({"text": "x", "repeat": 11}, "input.repeat"),
        ({"text": "x", "case": "shout"}, "input.case"),
        ({"text": "x", "colour": "red"}, "input.colour"),
    ):
        r = await client.post(model_url(owner), json={"input": inp}, headers=owner.headers)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and r.json()["detail"].startswith(field)
    assert (await client.get("/v1/predictions", headers=owner.headers)).json()["results"] == []
    assert (await client.get("/v1/jobs?kind=all", headers=owner.headers)).json()["items"] == []
    assert (await client.get("/v1/deployments", headers=owner.headers)).json()["results"] == []
    r = await client.post(model_url(owner, "nope"), json={"input": {}}, headers=owner.headers)
    assert r.status_code == 404
    r = await client.post("/v1/predictions", json={"version": "0" * 64, "input": {}}, headers=owner.headers)
    assert r.status_code == 404
    r = await client.post("/v1/predictions", json={"version": "v1", "input": {}}, headers=owner.headers)
    assert r.status_code == 422 and r.json()["field"] == "version"
    r = await client.post(
        model_url(owner), json={"input": {"text": "x"}}, headers={**owner.headers, "Prefer": "wait=61"}
    )
    assert r.status_code == 422 and r.json()["field"] == "Prefer"


async def test_a_version_id_runs_that_version_and_another_tenant_sees_nothing(
    client: httpx.AsyncClient, db: Database, owner: Tenant, tenant: Any
) -> None:
    v = await push(db, owner)
    r = await client.post("/v1/predictions", json={"version": v.digest, "input": {"text": "a"}}, headers=owner.headers)
    assert r.status_code == 201 and r.json()["version"] == v.digest
    ref = f"{owner.org.slug}/echo:{v.digest}"
    r2 = await client.post("/v1/predictions", json={"version": ref, "input": {"text": "b"}}, headers=owner.headers)
    assert r2.status_code == 201
    stranger = await tenant()
    pid = r.json()["id"]
    for method, path in (("GET", f"/v1/predictions/{pid}"), ("POST", f"/v1/predictions/{pid}/cancel")):
        assert (await client.request(method, path, headers=stranger.headers)).status_code == 404
    r = await client.post(
        "/v1/predictions", json={"version": v.digest, "input": {"text": "a"}}, headers=stranger.headers
    )
    assert r.status_code == 404
    assert (await client.get(model_url(owner).rsplit("/", 1)[0] + "/x", headers=stranger.headers)).status_code in (
        404,
        405,
    )
    assert (await client.get("/v1/predictions/not-an-id", headers=owner.headers)).status_code == 404


async def test_prefer_wait_answers_with_the_finished_prediction(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    warm = await predict(client, owner, {"text": "warm-up"})
    (a,) = await node.start_replicas()
    rid = a["replica"]["replica_id"]
    (first,) = (await node.claim([a]))["predictions"]
    assert first["id"] == warm["id"]
    await node.events(done(warm["id"], rid, output="warm-up"))

    async def serve() -> None:
        claim = await node.claim([a], wait_s=10)  # woken by the new prediction, not by polling
        (c,) = claim["predictions"]
        await node.events(done(c["id"], rid, output=c["input"]["text"].upper(), predict_time=0.001))

    server = asyncio.create_task(serve())
    r = await client.post(
        model_url(owner), json={"input": {"text": "sync"}}, headers={**owner.headers, "Prefer": "wait=10"}
    )
    await server
    assert r.status_code == 201 and r.headers["preference-applied"] == "wait=10"
    body = r.json()
    assert (body["status"], body["output"]) == ("succeeded", "SYNC")
    assert body["metrics"]["cold_start"] is False

    # Out of time: the answer reads `starting` (Replicate's client then polls), the prediction goes on.
    r = await client.post(
        model_url(owner), json={"input": {"text": "slow"}}, headers={**owner.headers, "Prefer": "wait=1"}
    )
    assert r.status_code == 201 and r.json()["status"] == "starting"


async def test_cancel_a_queued_prediction_at_once_and_a_running_one_through_the_claim(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    queued = await predict(client, owner, {"text": "q"})
    r = await client.post(f"/v1/predictions/{queued['id']}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "canceled" and r.json()["completed_at"]
    again = await client.post(f"/v1/predictions/{queued['id']}/cancel", headers=owner.headers)
    assert again.json()["status"] == "canceled"

    running = await predict(client, owner, {"text": "r"})
    (a,) = await node.start_replicas()
    rid = a["replica"]["replica_id"]
    claim = await node.claim([a])
    assert [c["id"] for c in claim["predictions"]] == [running["id"]]  # the canceled one is never claimed
    waiter = asyncio.create_task(node.claim([a], free=0, wait_s=10))
    await asyncio.sleep(0.2)
    r = await client.post(f"/v1/predictions/{running['id']}/cancel", headers=owner.headers)
    assert r.json()["status"] == "processing"
    told = await waiter
    assert told["cancel"] == [running["id"]] and told["predictions"] == []
    assert (await node.claim([a], free=0))["cancel"] == []  # told once (again only if still running 10 s later)
    (res,) = await node.events(done(running["id"], rid, status="canceled"))
    assert res["ok"]
    got = (await client.get(f"/v1/predictions/{running['id']}", headers=owner.headers)).json()
    assert got["status"] == "canceled" and got["error"] is None


async def test_list_pages_newest_first_with_next_and_previous_urls(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    ids = [(await predict(client, owner, {"text": str(i)}))["id"] for i in range(5)]
    page = (await client.get("/v1/predictions?limit=2", headers=owner.headers)).json()
    assert [p["id"] for p in page["results"]] == ids[::-1][:2] and page["previous"] is None
    second = (await client.get(page["next"], headers=owner.headers)).json()
    assert [p["id"] for p in second["results"]] == ids[::-1][2:4]
    back = (await client.get(second["previous"], headers=owner.headers)).json()
    assert [p["id"] for p in back["results"]] == ids[::-1][:2] and back["previous"] is None
    last = (await client.get(second["next"], headers=owner.headers)).json()
    assert [p["id"] for p in last["results"]] == ids[:1] and last["next"] is None


async def test_an_idempotency_key_makes_one_prediction_however_often_it_is_retried(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    url, body = model_url(owner), {"input": {"text": "once"}}
    headers = {**owner.headers, "Idempotency-Key": "retry-me-1"}
    tries = await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(5)))
    assert {r.status_code for r in tries} == {201}, [r.text for r in tries]
    assert len({r.json()["id"] for r in tries}) == 1
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in tries) == ["", "true", "true", "true", "true"]
    listed = (await client.get("/v1/predictions", headers=owner.headers)).json()["results"]
    assert [p["id"] for p in listed] == [tries[0].json()["id"]]
    # The same key with another body is refused; a key is per route, so another route may reuse it.
    r = await client.post(url, json={"input": {"text": "twice"}}, headers=headers)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"], r.text
    r = await client.post("/v1/predictions", json={**body, "version": tries[0].json()["version"]}, headers=headers)
    assert r.status_code == 201 and r.json()["id"] != tries[0].json()["id"]
