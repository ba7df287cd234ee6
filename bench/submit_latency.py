"""Benchmark: submit-to-running latency through `gpufleet up` with a simulated 8-GPU local agent.

Each job's first action prints the wall clock (`date +%s.%N`); the latency is that time minus
the time the client got the POST /v1/jobs response (same machine, same clock). Also reported:
to the job's `started_at` (the database's clock, when the agent's start report landed).
200 sequential submissions (each waits for the job to finish), then 50 concurrent ones (8 GPUs:
most of them queue for a GPU), then 50 concurrent CPU-only ones (no GPU to wait for).

    python bench/submit_latency.py [--sequential 200] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _up import Up, start_up


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1)


async def submit(client: httpx.AsyncClient, gpus: int = 1) -> tuple[str, float]:
    r = await client.post("/v1/jobs", json={"name": "lat", "script": "date +%s.%N", "gpu_count": gpus})
    t = time.time()
    r.raise_for_status()
    return r.json()["id"], t


async def measure(client: httpx.AsyncClient, job_id: str, t_submit: float) -> tuple[float, float]:
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout_s": 30})).json()
        if job["finished_at"]:
            break
    assert job["status"] == "succeeded", job
    while True:  # the logs land before the exit report; read them once
        page = (await client.get(f"/v1/jobs/{job_id}/logs")).json()
        if page["chunks"]:
            break
        await asyncio.sleep(0.01)
    printed = float(base64.b64decode(page["chunks"][0]["data_b64"]).decode().strip())
    started = datetime.fromisoformat(job["started_at"]).timestamp()
    return printed - t_submit, started - t_submit


async def run(up: Up, sequential: int, concurrent: int) -> dict[str, object]:
    async with httpx.AsyncClient(
        base_url=up.url, headers=up.headers, timeout=60, limits=httpx.Limits(max_connections=200)
    ) as client:
        for _ in range(5):  # warm-up
            await measure(client, *(await submit(client)))
        seq_run, seq_start = [], []
        for _ in range(sequential):
            a, b = await measure(client, *(await submit(client)))
            seq_run.append(a)
            seq_start.append(b)
        subs = await asyncio.gather(*(submit(client) for _ in range(concurrent)))
        results = await asyncio.gather(*(measure(client, j, t) for j, t in subs))
        con_run = [a for a, _ in results]
        con_start = [b for _, b in results]
        # The same without GPUs (gpu_count 0): no job waits for one of the 8 GPUs to free up, so
        # this is the control plane's latency under 50 concurrent submissions.
        subs = await asyncio.gather(*(submit(client, 0) for _ in range(concurrent)))
        results = await asyncio.gather(*(measure(client, j, t) for j, t in subs))
        cpu_run = [a for a, _ in results]
    return {
        "sequential": {
            "n": sequential,
            "to_process_p50_ms": pct(seq_run, 50),
            "to_process_p99_ms": pct(seq_run, 99),
            "to_started_at_p50_ms": pct(seq_start, 50),
            "to_started_at_p99_ms": pct(seq_start, 99),
        },
        "concurrent": {
            "n": concurrent,
            "to_process_p50_ms": pct(con_run, 50),
            "to_process_p99_ms": pct(con_run, 99),
            "to_started_at_p50_ms": pct(con_start, 50),
            "to_started_at_p99_ms": pct(con_start, 99),
            "note": "8 GPUs for 50 jobs: most wait for a GPU to free up",
        },
        "concurrent_no_gpu": {
            "n": concurrent,
            "to_process_p50_ms": pct(cpu_run, 50),
            "to_process_p99_ms": pct(cpu_run, 99),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--simulate", default="8xH100-80GB")
    args = ap.parse_args()
    up = start_up(args.simulate)
    try:
        result = asyncio.run(run(up, args.sequential, args.concurrent))
    finally:
        up.stop()
    print(
        json.dumps(
            {
                "benchmark": "submit_latency",
                "simulate": args.simulate,
                **result,
                "targets_ms": {"p50": 100, "p99": 1000},
                "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
            }
        )
    )


if __name__ == "__main__":
    main()
