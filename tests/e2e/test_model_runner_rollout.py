"""Deployments over real model workers: a rolling update under traffic with no failed prediction,
and a host lost mid-prediction (that prediction fails, is never run again, and the replica is
replaced on another host; the lost host's worker is killed when its agent comes back)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil

from gpufleet.background import liveness, reaper
from gpufleet.config import Settings
from tests.e2e.conftest import Cluster, until
from tests.e2e.test_model_runner import MODEL, finished, get, model_dir, push

VERSIONED = """
from cog import BasePredictor

class Predictor(BasePredictor):
    def setup(self):
        self.tag = "{tag}"

    def predict(self, text: str) -> str:
        return self.tag + ":" + text
"""


def _alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def test_a_rolling_update_under_traffic_fails_no_prediction(cluster: Cluster) -> None:
    await cluster.start_agent()
    org = cluster.owner.org.slug
    v1 = await push(cluster, "tagged", model_dir(cluster.tmp, "v1", VERSIONED.format(tag="v1")))
    r = await cluster.api.post(
        "/v1/deployments",
        json={"name": "roll", "model": f"{org}/tagged", "version": v1, "min_instances": 1, "max_instances": 1},
    )
    assert r.status_code == 201, r.text
    url = f"/v1/deployments/{org}/roll/predictions"
    outputs: list[str] = []
    failures: list[dict[str, object]] = []
    stop = asyncio.Event()

    async def traffic(n: int) -> None:
        i = 0
        while not stop.is_set():
            r = await cluster.api.post(url, json={"input": {"text": f"{n}-{i}"}}, headers={"Prefer": "wait=60"})
            body = r.json()
            if r.status_code != 201 or body["status"] != "succeeded":
                failures.append(body)
            else:
                outputs.append(body["output"])
            i += 1

    clients = [asyncio.create_task(traffic(n)) for n in range(3)]
    await until(lambda: len(outputs) >= 5, what="v1 to serve", deadline_s=60)
    v2 = await push(cluster, "tagged", model_dir(cluster.tmp, "v2", VERSIONED.format(tag="v2")))
    r = await cluster.api.patch(f"/v1/deployments/{org}/roll", json={"version": v2})
    assert r.status_code == 200 and r.json()["current_release"]["number"] == 2, r.text

    async def rolled() -> bool:
        d = (await cluster.api.get(f"/v1/deployments/{org}/roll")).json()
        live = [rep for rep in d["replicas"] if rep["status"] != "stopped"]
        return bool(live) and all(rep["version"] == v2 for rep in live) and outputs[-1].startswith("v2:")

    await until(rolled, what="the deployment to run v2 only", deadline_s=90)
    n = len(outputs)
    await until(lambda: len(outputs) >= n + 5, what="v2 to keep serving", deadline_s=30)
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    tags = [o.split(":")[0] for o in outputs]
    assert tags[0] == "v1" and tags[-1] == "v2" and set(tags) == {"v1", "v2"}
    # Once the new version answered, the old one did not come back (the old replica was drained).
    assert "v1" not in tags[tags.index("v2") + 3 :], tags


async def test_a_host_lost_mid_prediction_fails_it_once_and_a_replacement_serves(
    cluster: Cluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    first = await cluster.start_agent("node-a", stop_jobs_on_exit=False)
    await push(
        cluster, "runner", model_dir(cluster.tmp, "runner", MODEL.replace('os.environ["GF_MARKS"]', repr(str(marks))))
    )
    r = await cluster.api.post(
        f"/v1/models/{cluster.owner.org.slug}/runner/predictions",
        json={"input": {"text": "slow", "mode": "slow"}},
    )
    slow = r.json()
    await until(lambda: _processing_with_logs(cluster, slow["id"]), what="the slow prediction to run")
    assert first.agent.jobs is not None and first.agent.jobs.models is not None
    (rep,) = first.agent.jobs.models.replicas.values()
    worker = rep.run.pid
    assert first.agent.credential is not None
    host_a = first.agent.credential.host_id

    # The host goes silent (its agent stops; the worker does not) and the server declares it lost.
    await first.close()
    assert _alive(worker)
    async with cluster.db.system_transaction() as conn:
        await conn.execute("update hosts set last_heartbeat_at = now() - interval '10 minutes' where id = $1", host_a)
    assert host_a in [h.host_id for h in await liveness.run_once(cluster.db)]
    async with cluster.db.system_transaction() as conn:
        await conn.execute("update hosts set unreachable_since = now() - interval '10 minutes' where id = $1", host_a)
    await reaper.run_once(cluster.db, Settings())
    p = await finished(cluster, slow["id"], 30)
    assert p["status"] == "failed" and "lost" in p["error"], p

    # Another host serves the model; the failed prediction is not run again.
    await cluster.start_agent("node-b")
    r = await cluster.api.post(
        f"/v1/models/{cluster.owner.org.slug}/runner/predictions",
        json={"input": {"text": "after"}},
        headers={"Prefer": "wait=60"},
    )
    assert (r.json()["status"], r.json()["output"]) == ("succeeded", "after"), r.text
    assert (await get(cluster, slow["id"]))["status"] == "failed"

    # node-a comes back: told that its replica's attempt is stale, it kills the old worker.
    await cluster.start_agent("node-a", state_dir=cluster.tmp / "node-a")
    await until(lambda: not _alive(worker), what="the lost host's worker to be killed", deadline_s=30)
    p = await get(cluster, slow["id"])
    assert p["status"] == "failed" and p["output"] is None, p


async def _processing_with_logs(c: Cluster, pid: str) -> bool:
    p = await get(c, pid)
    return p["status"] == "processing" and bool(p["logs"])
