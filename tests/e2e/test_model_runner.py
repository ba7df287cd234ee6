"""Predictions served by the Model Runner: a real server (autoscaler and scheduler on), a real agent
with simulated GPUs, real worker processes. Models are pushed through the API; the agent builds
their environments (offline, from a local wheel), and replicas serve, stream, cancel, crash and
come back, and survive an agent restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gpufleet.agent.runner.envs import PipOptions
from gpufleet.inference import archive
from tests.agent.test_runner_envs import make_wheel
from tests.e2e.conftest import Cluster, until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"

MODEL = """
import os, time
from cog import BasePredictor, Input, Path

class Predictor(BasePredictor):
    def setup(self):
        with open(os.environ["GF_MARKS"] + "/setup", "a") as f:
            f.write("x")

    def predict(self, text: str = Input(description="t"), mode: str = "echo") -> str:
        print("serving", text)
        if mode == "slow":
            for _ in range(3000):
                time.sleep(0.01)
        if mode == "crash":
            os._exit(7)
        if mode == "huge":
            return "x" * 6_000_000
        if mode == "file":
            out = Path("result.txt")
            out.write_text(text.upper())
            return out
        return text
""".replace("-> Path:", ":")

STREAM = """
import time
from cog import BasePredictor, ConcatenateIterator

class Predictor(BasePredictor):
    def predict(self, words: int = 3) -> ConcatenateIterator[str]:
        for i in range(words):
            print(f"token {i}")
            yield f"w{i} "
            time.sleep(0.05)
"""

WITH_PACKAGE = """
import gftiny
from cog import BasePredictor

class Predictor(BasePredictor):
    def predict(self) -> int:
        return gftiny.VALUE
"""


def model_dir(tmp: Path, name: str, source: str, packages: list[str] | None = None) -> Path:
    d = tmp / f"src-{name}"
    d.mkdir()
    (d / "predict.py").write_text(source)
    lines = ["build:", "  gpu: false", f"  python_packages: {packages or []}", 'predict: "predict.py:Predictor"']
    (d / "cog.yaml").write_text("\n".join(lines) + "\n")
    return d


async def push(c: Cluster, name: str, directory: Path, **hardware: Any) -> str:
    r = await c.api.post("/v1/models", json={"name": name, "gpu_fraction": 0.25, **hardware})
    assert r.status_code in (201, 409), r.text
    r = await c.api.post(
        f"/v1/models/{c.owner.org.slug}/{name}/versions",
        content=archive.pack(directory),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def predict(c: Cluster, name: str, inp: dict[str, Any], wait: int | None = 60) -> dict[str, Any]:
    headers = {"Prefer": f"wait={wait}"} if wait else {}
    r = await c.api.post(f"/v1/models/{c.owner.org.slug}/{name}/predictions", json={"input": inp}, headers=headers)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def get(c: Cluster, pid: str) -> dict[str, Any]:
    r = await c.api.get(f"/v1/predictions/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def finished(c: Cluster, pid: str, deadline_s: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        p = await get(c, pid)
        return p if p["status"] in ("succeeded", "failed", "canceled") else None

    return dict(await until(check, deadline_s=deadline_s, what=f"prediction {pid} to finish"))


async def test_cold_start_then_warm_predictions_with_logs_files_and_streams(cluster: Cluster) -> None:
    agent = await cluster.start_agent()
    await push(cluster, "echo", EXAMPLES / "echo")
    # The examples' echo, cold: the replica is started for it, and its timings are in the metrics.
    started = time.monotonic()
    p = await predict(cluster, "echo", {"text": "hi", "repeat": 2})
    assert p["status"] == "succeeded", p
    assert p["output"] == "hi hi" and p["error"] is None and time.monotonic() - started < 30
    metrics = p["metrics"]
    assert metrics["cold_start"] is True and metrics["predict_time"] > 0
    assert metrics["environment_time"] >= 0 and metrics["setup_time"] >= 0
    # Warm: the same replica answers at once.
    for i in range(5):
        started = time.monotonic()
        p = await predict(cluster, "echo", {"text": f"w{i}", "case": "upper"})
        assert p["output"] == f"W{i}" and not p["metrics"].get("cold_start")
    assert time.monotonic() - started < 2
    replicas = (await cluster.api.get("/v1/jobs", params={"kind": "replica"})).json()["items"]
    assert [j["status"] for j in replicas] == ["running"]
    # The environment: the agent's own interpreter (no packages), the version unpacked once.
    assert agent.agent.jobs is not None and agent.agent.jobs.models is not None
    (rep,) = agent.agent.jobs.models.replicas.values()
    assert rep.environment_cached is False and rep.ready and rep.slots == 1

    # A generator: each item streams into the prediction; the logs are the prediction's own.
    await push(cluster, "stream", model_dir(cluster.tmp, "stream", STREAM))
    p = await predict(cluster, "stream", {"words": 4})
    assert p["status"] == "succeeded", p
    assert p["output"] == ["w0 ", "w1 ", "w2 ", "w3 "] and p["logs"] == "token 0\ntoken 1\ntoken 2\ntoken 3\n"


async def test_cancel_crash_files_and_a_replacement(cluster: Cluster) -> None:
    marks = cluster.tmp / "marks"
    marks.mkdir()
    await cluster.start_agent(pip=PipOptions(no_index=True))
    await push(
        cluster, "runner", model_dir(cluster.tmp, "runner", MODEL.replace('os.environ["GF_MARKS"]', repr(str(marks))))
    )
    p = await predict(cluster, "runner", {"text": "one"})
    assert (p["status"], p["output"], p["logs"]) == ("succeeded", "one", "serving one\n"), p

    # A Path output is uploaded by the agent: the output is its URL, readable with the API key.
    p = await predict(cluster, "runner", {"text": "file", "mode": "file"})
    assert p["status"] == "succeeded" and p["output"].endswith("/download"), p
    got = await cluster.api.get(p["output"])
    assert got.status_code == 200 and got.content == b"FILE"

    # An output the server will not take (over its body limit) still ends the prediction.
    p = await predict(cluster, "runner", {"text": "big", "mode": "huge"})
    assert p["status"] == "failed" and "the server refused the prediction's result" in p["error"], p

    # Cancel: the running predict() is interrupted and the replica goes on.
    slow = await predict(cluster, "runner", {"text": "slow", "mode": "slow"}, wait=None)
    await until(lambda: _status(cluster, slow["id"], "processing"), what="the slow prediction to run")
    r = await cluster.api.post(f"/v1/predictions/{slow['id']}/cancel")
    assert r.status_code == 200, r.text
    assert (await finished(cluster, slow["id"], 20))["status"] == "canceled"
    p = await predict(cluster, "runner", {"text": "after-cancel"})
    assert p["output"] == "after-cancel"
    assert (marks / "setup").read_text() == "x"  # one replica, set up once, all along

    # A crash: that prediction fails with the reason and the worker's last lines; a replacement
    # replica (set up anew) serves the next one.
    p = await predict(cluster, "runner", {"text": "boom", "mode": "crash"})
    assert p["status"] == "failed", p
    assert "exit" in p["error"] and "7" in p["error"] and "serving boom" in p["error"], p["error"]
    p = await predict(cluster, "runner", {"text": "again"})
    assert (p["status"], p["output"]) == ("succeeded", "again"), p
    assert (marks / "setup").read_text() == "xx"


async def test_a_version_with_packages_runs_in_its_venv_built_offline(cluster: Cluster) -> None:
    wheels = cluster.tmp / "wheels"
    make_wheel(wheels, value=1234)
    await cluster.start_agent(pip=PipOptions(no_index=True, find_links=(str(wheels),)))
    await push(cluster, "pkg", model_dir(cluster.tmp, "pkg", WITH_PACKAGE, ["gftiny==1.0"]))
    p = await predict(cluster, "pkg", {})
    assert (p["status"], p["output"]) == ("succeeded", 1234), p
    assert p["metrics"]["environment_time"] > 0


async def test_an_agent_restart_adopts_the_running_worker(cluster: Cluster) -> None:
    marks = cluster.tmp / "marks"
    marks.mkdir()
    first = await cluster.start_agent(stop_jobs_on_exit=False)
    await push(
        cluster, "runner", model_dir(cluster.tmp, "runner", MODEL.replace('os.environ["GF_MARKS"]', repr(str(marks))))
    )
    p = await predict(cluster, "runner", {"text": "before"})
    assert p["output"] == "before", p
    assert first.agent.jobs is not None and first.agent.jobs.models is not None
    (rep,) = first.agent.jobs.models.replicas.values()
    worker_pid = rep.run.pid
    await first.close()
    # The worker still runs; a new agent on the same state dir connects to it again.
    second = await cluster.start_agent(stop_jobs_on_exit=True)
    p = await predict(cluster, "runner", {"text": "after"})
    assert (p["status"], p["output"]) == ("succeeded", "after"), p
    assert second.agent.jobs is not None and second.agent.jobs.models is not None
    (rep,) = second.agent.jobs.models.replicas.values()
    assert rep.run.pid == worker_pid and (marks / "setup").read_text() == "x"  # not set up again


async def _status(c: Cluster, pid: str, status: str) -> bool:
    return (await get(c, pid))["status"] == status


BROKEN = """
from cog import BasePredictor

class Predictor(BasePredictor):
    def setup(self):
        print("loading weights")
        raise RuntimeError("weights not found at /models/x")

    def predict(self) -> str:
        return "never"
"""


async def test_scale_to_zero_drains_the_replica_and_its_worker_exits_cleanly(cluster: Cluster) -> None:
    await cluster.start_agent()
    await push(cluster, "echo", EXAMPLES / "echo")
    org = cluster.owner.org.slug
    r = await cluster.api.post(
        "/v1/deployments",
        json={"name": "quick", "model": f"{org}/echo", "min_instances": 0, "max_instances": 1, "idle_timeout_s": 1},
    )
    assert r.status_code == 201, r.text
    r = await cluster.api.post(
        f"/v1/deployments/{org}/quick/predictions", json={"input": {"text": "z"}}, headers={"Prefer": "wait=60"}
    )
    assert r.status_code in (200, 201) and r.json()["output"] == "z", r.text
    (job,) = (await cluster.api.get("/v1/jobs", params={"kind": "replica"})).json()["items"]
    done = await cluster.wait(job["id"], deadline_s=30)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done  # drained: shutdown, exit 0
    deployment = (await cluster.api.get(f"/v1/deployments/{org}/quick")).json()
    assert [rep["status"] for rep in deployment["replicas"] if rep["status"] != "stopped"] == []


async def test_a_failing_setup_fails_the_replica_with_its_error(cluster: Cluster) -> None:
    await cluster.start_agent()
    await push(cluster, "broken", model_dir(cluster.tmp, "broken", BROKEN))
    p = await predict(cluster, "broken", {}, wait=None)
    org = cluster.owner.org.slug

    async def failed_replica() -> tuple[str, str] | None:
        async with cluster.db.system_transaction() as conn:
            row = await conn.fetchrow("select job_id, error from replicas where error is not null limit 1")
        return None if row is None else (str(row["job_id"]), row["error"])

    job_id, error = await until(failed_replica, what="the replica to fail")
    assert "RuntimeError: weights not found at /models/x" in error, error
    job = await cluster.wait(job_id)
    assert job["status"] == "failed", job
    assert b"loading weights" in (await cluster.logs(job_id))["stdout"]
    del org
    # The prediction waiting for it fails with the reason (it never ran).
    p = await finished(cluster, p["id"], 20)
    assert p["status"] == "failed" and "RuntimeError: weights not found at /models/x" in p["error"], p
    assert p["started_at"] is None


async def test_an_agent_stopping_its_jobs_fails_the_predictions_in_flight_with_why(cluster: Cluster) -> None:
    marks = cluster.tmp / "marks"
    marks.mkdir()
    node = await cluster.start_agent(stop_jobs_on_exit=True)
    await push(
        cluster, "runner", model_dir(cluster.tmp, "runner", MODEL.replace('os.environ["GF_MARKS"]', repr(str(marks))))
    )
    slow = await predict(cluster, "runner", {"text": "slow", "mode": "slow"}, wait=None)
    await until(lambda: _status(cluster, slow["id"], "processing"), what="the slow prediction to run")
    await until(lambda: _logged(cluster, slow["id"]), what="its first line")
    await node.close()
    p = await finished(cluster, slow["id"], 20)
    assert p["status"] == "failed" and "interrupted: the agent stopped" in p["error"], p
    assert "serving slow" in p["logs"]


async def _logged(c: Cluster, pid: str) -> bool:
    return bool((await get(c, pid))["logs"])
