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
    assert (
        p["urls"]["get"].endswith(f"/v1/predictions/{p['id']}") and "stream" not in p["urls"] or not p["urls"]["stream"]
    )

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
