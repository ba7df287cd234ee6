"""The agent's side of predictions over HTTP: fencing of claims and events, per-event results,
and what happens to in-flight predictions when a replica's job ends by any path."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import httpx

from gpufleet.background import autoscaler, reaper
from gpufleet.db.pool import Database
from gpufleet.services.deployments import IMPLICIT_PREFIX
from tests.api.conftest import Tenant
from tests.execution.helpers import sql
from tests.predictions.helpers import Agent, agent, done, push
from tests.predictions.test_predictions_api import model_url, predict
from tests.scheduling.helpers import scheduler, settings


async def running_replica(client: httpx.AsyncClient, db: Database, owner: Tenant) -> tuple[Agent, dict[str, Any], str]:
    """A ready replica on node-1 with one prediction claimed (processing); (agent, assignment, prediction id)."""
    await push(db, owner)
    node = await agent(client, db, owner)
    p = await predict(client, owner, {"text": "x"})
    (a,) = await node.start_replicas()
    assert [c["id"] for c in (await node.claim([a]))["predictions"]] == [p["id"]]
    return node, a, p["id"]


async def prediction(client: httpx.AsyncClient, t: Tenant, pid: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/predictions/{pid}", headers=t.headers)).json()
    return body


async def test_claims_are_fenced_by_host_and_attempt(client: httpx.AsyncClient, db: Database, owner: Tenant) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    other = await agent(client, db, owner, "node-2")
    await predict(client, owner, {"text": "x"})
    (a,) = await node.start_replicas()
    stale = {**a, "attempt": 2}
    assert (await node.claim([stale]))["predictions"] == []
    assert (await other.claim([a]))["predictions"] == []  # not this host's replica
    r = await other.state(a, "ready")
    assert r.status_code == 409 and r.json()["title"] == "Stale Attempt"
    wrong = {**a, "replica": {**a["replica"], "replica_id": str(UUID(int=7))}}
    assert (await node.state(wrong, "ready")).status_code == 409
    assert len((await node.claim([a], free=3))["predictions"]) == 1
    api = await client.post("/v1/agent/predictions/claim", json={"replicas": []}, headers=owner.headers)
    assert api.status_code == 401  # an API key is not a host credential


async def test_a_replica_assignment_names_what_its_runner_serves(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    await predict(client, owner, {"text": "x"})
    (a,) = await node.start_replicas()
    replica = a["replica"]
    assert replica["model"] == f"{owner.org.slug}/echo"
    assert replica["deployment"] == f"{owner.org.slug}/{IMPLICIT_PREFIX}echo"
    assert replica["concurrency"] == 1 and isinstance(replica["python_packages"], list)


async def test_a_batch_with_a_stale_event_applies_the_others(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    node, a, pid = await running_replica(client, db, owner)
    rid = a["replica"]["replica_id"]
    queued = await predict(client, owner, {"text": "later"})  # not claimed: no replica is free
    stranger = await agent(client, db, owner, "node-2")
    results = await node.events(
        {"prediction_id": pid, "replica_id": rid, "type": "logs", "text": "a\n"},
        {"prediction_id": queued["id"], "replica_id": rid, "type": "output", "item": "nope"},
        {"prediction_id": str(UUID(int=9)), "replica_id": rid, "type": "logs", "text": "?"},
        {"prediction_id": pid, "replica_id": rid, "type": "logs", "text": "b\u0000\n"},
        done(pid, rid, output={"x": [1, 2]}),
        done(pid, rid, status="failed", error="late"),
    )
    assert [r["ok"] for r in results] == [True, False, False, True, True, False]
    assert "does not run on this replica" in results[1]["reason"] and results[2]["reason"] == "no such prediction"
    assert "already ended (succeeded)" in results[5]["reason"]
    got = await prediction(client, owner, pid)
    assert (got["status"], got["output"], got["logs"]) == ("succeeded", {"x": [1, 2]}, "a\nb\n")
    assert (await prediction(client, owner, queued["id"]))["status"] == "starting"
    (res,) = await stranger.events(done(queued["id"], rid))
    assert res == {"prediction_id": queued["id"], "ok": False, "reason": "the replica does not run on this host now"}


async def test_a_crashed_replica_fails_its_prediction_and_restarts_with_backoff(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    node, a, pid = await running_replica(client, db, owner)
    rid = a["replica"]["replica_id"]
    queued = await predict(client, owner, {"text": "next"})
    await node.events({"prediction_id": pid, "replica_id": rid, "type": "logs", "text": "partial\n"})
    assert (await node.exit(a, "failed", reason="worker died: SIGSEGV")).status_code == 204
    got = await prediction(client, owner, pid)
    assert got["status"] == "failed" and "the replica running it ended (failed: worker died: SIGSEGV)" in got["error"]
    assert got["logs"] == "partial\n"  # the logs are kept
    assert (await prediction(client, owner, queued["id"]))["status"] == "starting"  # the queue waits for a replacement
    d = (await client.get(f"/v1/deployments/{owner.org.slug}/model.echo", headers=owner.headers)).json()
    assert d["replicas"] == [] and d["failures"] == 1 and d["next_start_after"] is not None and d["queued"] == 1
    report = await autoscaler.run_once(db, settings())
    assert report.started == []  # backing off (1 s)
    await sql(db, "update deployments set next_start_after = now() - interval '1 second'")
    report = await autoscaler.run_once(db, settings())
    assert len(report.started) == 1
    (b,) = await node.start_replicas()
    assert [c["id"] for c in (await node.claim([b]))["predictions"]] == [queued["id"]]
    d = (await client.get(f"/v1/deployments/{owner.org.slug}/model.echo", headers=owner.headers)).json()
    assert d["failures"] == 0 and d["next_start_after"] is None  # reset by the ready replica


async def test_host_loss_fails_the_in_flight_prediction_never_retried(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    node, a, pid = await running_replica(client, db, owner)
    await sql(db, "update hosts set status = 'unreachable' where id = $1", UUID(node.host_id))
    await sql(db, "update hosts set unreachable_since = now() - interval '5 minutes' where id = $1", UUID(node.host_id))
    result = await reaper.run_once(db, settings(host_loss_grace_s=60))
    assert result.failed == [UUID(a["job_id"])]
    got = await prediction(client, owner, pid)
    assert got["status"] == "failed" and "host_lost" in got["error"]
    # The agent comes back and reports: stale, nothing changes.
    (res,) = await node.events(done(pid, a["replica"]["replica_id"], output="late"))
    assert res["ok"] is False
    assert (await prediction(client, owner, pid))["output"] is None


async def test_a_drained_replica_exits_cleanly_and_a_cancelled_replica_job_cancels_its_work(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    node, a, pid = await running_replica(client, db, owner)
    r = await client.post(f"/v1/jobs/{a['job_id']}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["cancel_requested_at"] is not None
    await client.post(f"/v1/predictions/{pid}/cancel", headers=owner.headers)
    assert (await node.exit(a, "cancelled")).status_code == 204
    got = await prediction(client, owner, pid)
    assert got["status"] == "canceled"  # a cancel was asked for it: canceled, not failed
    d = (await client.get(f"/v1/deployments/{owner.org.slug}/model.echo", headers=owner.headers)).json()
    assert d["failures"] == 0


async def test_a_failed_setup_fails_what_waits_for_that_version(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    p = await predict(client, owner, {"text": "x"})
    await autoscaler.run_once(db, settings())
    await scheduler(db).run_once()
    (a,) = await node.assignments()
    await client.post(f"/v1/agent/jobs/{a['job_id']}/started", json={"attempt": 1}, headers=node.headers)
    r = await node.state(a, "failed", error="ImportError: no module named torch", setup_s=0.5)
    assert r.status_code == 204
    assert (await node.exit(a, "failed", reason="setup failed")).status_code == 204
    got = await prediction(client, owner, p["id"])
    assert got["status"] == "failed" and "ImportError: no module named torch" in got["error"]
    r = await client.post(model_url(owner), json={"input": {"text": "y"}}, headers=owner.headers)
    assert r.status_code == 201  # a new prediction queues again (after the backoff, a new replica tries)


async def test_a_replica_no_host_can_hold_fails_what_waits_and_the_sweep_stops_it(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    await agent(client, db, owner)  # A100s only
    r = await client.post(
        "/v1/deployments",
        json={"name": "big", "model": f"{owner.org.slug}/echo", "hardware": "1x H100"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    p = (
        await client.post(
            f"/v1/deployments/{owner.org.slug}/big/predictions", json={"input": {"text": "x"}}, headers=owner.headers
        )
    ).json()
    await scheduler(db).run_once()  # set-based: allocation_failed, no transition hook runs
    (job,) = (await client.get("/v1/jobs?kind=replica", headers=owner.headers)).json()["items"]
    assert job["status"] == "allocation_failed"
    report = await autoscaler.run_once(db, settings())
    assert report.stopped == [UUID(job["id"])]
    got = await prediction(client, owner, p["id"])
    assert got["status"] == "failed" and got["error"].startswith("no host can run a replica of this model")
    d = (await client.get(f"/v1/deployments/{owner.org.slug}/big", headers=owner.headers)).json()
    assert d["replicas"] == [] and d["failures"] == 1 and d["queued"] == 0


async def test_a_slot_offered_before_its_done_event_lands_is_filled_when_it_does(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    """An agent offers a slot again as soon as its worker is done, which can reach the server
    before the `done` event commits: that claim finds the slot taken and waits. The `done` must wake
    it (a queued prediction is waiting), not the next prediction to arrive or the poll's end."""
    node, a, first = await running_replica(client, db, owner)
    second = (await predict(client, owner, {"text": "next"}))["id"]
    waiter = asyncio.create_task(node.claim([a], wait_s=20))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # the slot is still taken on the server
    started = time.monotonic()
    await node.events(done(first, a["replica"]["replica_id"], output="x"))
    reply = await asyncio.wait_for(waiter, 10)
    assert [c["id"] for c in reply["predictions"]] == [second]
    assert time.monotonic() - started < 1.5, "the freed slot waited for something else to wake the poll"
