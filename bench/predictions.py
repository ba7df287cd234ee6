"""Benchmark: predictions through `gpufleet up --simulate 8xH100-80GB` (server, embedded database,
scheduler and its local agent running real model workers), with the example `echo` model.

    python bench/predictions.py [--requests 400] [--clients 64] [--seconds 20]

Prints one JSON object:

* ``warm_sync``: one warm replica, sequential `Prefer: wait` predictions. The latency a client
  sees, and the same predict() called in-process (setup once, then timed), p50/p99; ``added_*`` is
  the difference of the medians and of the 99th percentiles: gpufleet's overhead.
* ``throughput``: a deployment of 4 replicas, each a quarter of one GPU, and ``--clients``
  concurrent clients each sending `Prefer: wait` predictions for ``--seconds``; successes per second.
* ``cold_start``: a deployment scaled to zero; the first prediction's time from creation to its
  output, and its breakdown from the prediction's metrics (scheduling and starting the replica,
  materializing the environment, setup(), predict()): once with the environment already cached
  on the host and once after removing the cache.

Rates count succeeded predictions only; the run exits non-zero when more than 0.1 % failed.
The server runs with the default logging (INFO, access log on) on the durable embedded database.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine
from _up import Up, cpu_seconds, start_server

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "models" / "echo"
ORG = "default"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]


def in_process_ms(n: int) -> list[float]:
    """The echo predictor called directly: setup() once, then n predict() calls, in ms each."""
    spec = importlib.util.spec_from_file_location("echo_predict", ECHO / "predict.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictor = module.Predictor()
    predictor.setup()
    out = []
    for i in range(n):
        t = time.perf_counter()
        predictor.predict(text=f"hello {i}", repeat=1, case="as-is", reverse=False, separator=" ")
        out.append((time.perf_counter() - t) * 1000)
    return out


async def push_echo(api: httpx.AsyncClient) -> str:
    from gpufleet.inference.archive import pack

    r = await api.post("/v1/models", json={"name": "echo", "gpu_fraction": 0.25})
    assert r.status_code in (201, 409), r.text
    r = await api.post(
        f"/v1/models/{ORG}/echo/versions", content=pack(ECHO), headers={"Content-Type": "application/gzip"}
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def deployment(api: httpx.AsyncClient, name: str, digest: str, *, min_n: int, max_n: int) -> None:
    r = await api.post(
        "/v1/deployments",
        json={
            "name": name,
            "model": f"{ORG}/echo",
            "version": digest,
            "min_instances": min_n,
            "max_instances": max_n,
            "gpu_fraction": 0.25,
            "idle_timeout_s": 3600,
        },
    )
    assert r.status_code == 201, r.text


async def ready_replicas(api: httpx.AsyncClient, name: str, n: int, deadline_s: float = 180) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        d = (await api.get(f"/v1/deployments/{ORG}/{name}")).json()
        ready = [r for r in d.get("replicas", []) if r["status"] == "ready"]
        if len(ready) >= n:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"deployment {name}: {n} replicas not ready in {deadline_s} s")


async def predict(api: httpx.AsyncClient, name: str, i: int) -> tuple[bool, float, dict[str, Any]]:
    t = time.perf_counter()
    r = await api.post(
        f"/v1/deployments/{ORG}/{name}/predictions",
        json={"input": {"text": f"hello {i}"}},
        headers={"Prefer": "wait=60"},
    )
    ms = (time.perf_counter() - t) * 1000
    body = r.json() if r.status_code < 500 else {}
    return r.status_code in (200, 201) and body.get("status") == "succeeded", ms, body


async def warm_sync(api: httpx.AsyncClient, digest: str, n: int) -> dict[str, Any]:
    await deployment(api, "warm", digest, min_n=1, max_n=1)
    await ready_replicas(api, "warm", 1)
    for i in range(20):  # warm the connections and the worker
        await predict(api, "warm", i)
    ok_ms: list[float] = []
    failed = 0
    for i in range(n):
        ok, ms, _ = await predict(api, "warm", i)
        if ok:
            ok_ms.append(ms)
        else:
            failed += 1
    local = in_process_ms(n)
    return {
        "requests": n,
        "failed": failed,
        "client_p50_ms": round(pct(ok_ms, 50), 2),
        "client_p99_ms": round(pct(ok_ms, 99), 2),
        "in_process_p50_ms": round(pct(local, 50), 4),
        "in_process_p99_ms": round(pct(local, 99), 4),
        "added_p50_ms": round(pct(ok_ms, 50) - pct(local, 50), 2),
        "added_p99_ms": round(pct(ok_ms, 99) - pct(local, 99), 2),
    }


def processes(up: Up) -> dict[str, psutil.Process]:
    """The server, the agent, PostgreSQL, and the model workers (the agent's grandchildren)."""
    procs = up.processes()
    for p in psutil.process_iter(["cmdline"]):
        if "worker.py" in " ".join(p.info["cmdline"] or []):
            procs[f"worker-{p.pid}"] = p
    return procs


async def throughput(up: Up, api: httpx.AsyncClient, digest: str, clients: int, seconds: float) -> dict[str, Any]:
    await deployment(api, "fleet", digest, min_n=4, max_n=4)
    await ready_replicas(api, "fleet", 4)
    procs = processes(up)
    cpu0, client0 = cpu_seconds(procs), time.process_time()
    done: list[float] = []
    failed = 0
    stop_at = time.monotonic() + seconds

    async def client(c: int) -> None:
        nonlocal failed
        i = 0
        while time.monotonic() < stop_at:
            ok, ms, _ = await predict(api, "fleet", c * 1_000_000 + i)
            i += 1
            if ok:
                done.append(ms)
            else:
                failed += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.monotonic() - t0
    total = len(done) + failed
    cpu1, client1 = cpu_seconds(procs), time.process_time()
    used = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    workers = sum(v for k, v in used.items() if k.startswith("worker-"))
    by_process = {k: v for k, v in used.items() if not k.startswith("worker-")}
    by_process["workers"] = workers
    by_process["benchmark_client"] = client1 - client0
    return {
        "replicas": 4,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "succeeded": len(done),
        "failed": failed,
        "failure_rate": round(failed / total, 6) if total else 1.0,
        "predictions_per_s": round(len(done) / elapsed, 1),
        "latency_p50_ms": round(pct(done, 50), 1) if done else None,
        "latency_p99_ms": round(pct(done, 99), 1) if done else None,
        # CPU per succeeded prediction, by process: where the two cores go.
        "cpu_ms_per_prediction": {k: round(1000 * v / max(1, len(done)), 2) for k, v in by_process.items()},
    }


async def push_variant(api: httpx.AsyncClient, tag: str) -> str:
    """A copy of echo that differs by one comment: a version this host has never seen."""
    from gpufleet.inference.archive import pack

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "echo"
        shutil.copytree(ECHO, d)
        with (d / "predict.py").open("a") as f:
            f.write(f"# variant {tag} {time.time_ns()}\n")
        r = await api.post(
            f"/v1/models/{ORG}/echo/versions", content=pack(d), headers={"Content-Type": "application/gzip"}
        )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def cold(api: httpx.AsyncClient, digest: str, name: str) -> dict[str, Any]:
    """A deployment at zero replicas; its first prediction (Prefer: wait) and the parts of it."""
    await deployment(api, name, digest, min_n=0, max_n=1)
    t = time.perf_counter()
    ok, _, body = await predict(api, name, 0)
    total_ms = (time.perf_counter() - t) * 1000
    m = body.get("metrics", {})
    parts = {k: m.get(k) for k in ("queue_time", "environment_time", "setup_time", "predict_time", "total_time")}
    known = sum(v for k, v in parts.items() if k not in ("queue_time", "total_time") and isinstance(v, int | float))
    queue = parts.get("queue_time") or 0.0
    return {
        "succeeded": ok,
        "cold_start": m.get("cold_start"),
        "client_total_ms": round(total_ms, 1),
        **{f"{k}_s": (round(v, 4) if isinstance(v, int | float) else v) for k, v in parts.items()},
        # gpufleet's own part: the wait before predict() began, less what the model's setup() and the
        # environment took (scheduling, starting the worker process, the round trips).
        "overhead_s": round(queue - (parts.get("environment_time") or 0) - (parts.get("setup_time") or 0), 4)
        if parts.get("queue_time") is not None
        else None,
        "model_part_s": round(known, 4),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    up: Up = start_server(["up", "--simulate", "8xH100-80GB"], wait_for_gpus=True)
    try:
        async with httpx.AsyncClient(
            base_url=up.url, headers=up.headers, timeout=120, limits=httpx.Limits(max_connections=args.clients + 8)
        ) as api:
            digest = await push_echo(api)
            warm = await warm_sync(api, digest, args.requests)
            fresh = await push_variant(api, "uncached")
            cold_uncached = await cold(api, fresh, "cold-uncached")  # the host never saw this version
            cold_cached = await cold(api, fresh, "cold-cached")  # the same version again: cached on the host
            thr = await throughput(up, api, digest, args.clients, args.seconds)
    finally:
        up.stop()
    failures = warm["failed"] + thr["failed"]
    total = args.requests + thr["succeeded"] + thr["failed"]
    return {
        "benchmark": "predictions",
        "machine": machine(),
        "configuration": "gpufleet up --simulate 8xH100-80GB, embedded PostgreSQL (durable), INFO logging, echo model",
        "warm_sync": warm,
        "throughput": thr,
        "cold_start_uncached_env": cold_uncached,
        "cold_start_cached_env": cold_cached,
        "failure_rate": round(failures / total, 6) if total else 1.0,
        "targets": {"added_p50_ms": 10, "added_p99_ms": 50, "predictions_per_s": 300, "cold_overhead_s": 1.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    result = asyncio.run(main_async(parser.parse_args()))
    print(json.dumps(result))
    if result["failure_rate"] > MAX_ERROR_RATE:
        sys.exit(1)


if __name__ == "__main__":
    main()
