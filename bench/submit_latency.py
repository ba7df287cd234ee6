"""Benchmark: submit-to-running latency through `gpufleet up` with a simulated 8-GPU local agent.

Each job's first action prints the wall clock (`date +%s.%N`); the latency is that time minus
the time just before the client sent POST /v1/jobs (same machine, same clock), as the Slurm
comparison starts before `sbatch`. Also reported, labelled: the same from when the POST's
response arrived (``after_post_*``), and to the job's `started_at` (the database's clock, when the
agent's start report landed). A job that does not succeed is an error: the benchmark exits
non-zero when more than 0.1% of them fail. The server runs with the default logging (INFO).
200 sequential submissions (each waits for the job to finish), then 50 concurrent ones (8 GPUs:
most of them queue for a GPU), then 50 concurrent CPU-only ones (no GPU to wait for).

    python bench/submit_latency.py [--sequential 200] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine
from _up import Up, start_up


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1)


FAILED: list[str] = []


async def submit(client: httpx.AsyncClient, gpus: int = 1) -> tuple[str, float, float]:
    before = time.time()  # before the request is sent
    r = await client.post("/v1/jobs", json={"name": "lat", "script": "date +%s.%N", "gpu_count": gpus})
    after = time.time()
    r.raise_for_status()
    return r.json()["id"], before, after


async def measure(client: httpx.AsyncClient, job_id: str, t_before: float, t_after: float) -> tuple[float, ...]:
    """Seconds to the job's first action from before the POST and from its response, and to started_at."""
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout_s": 30})).json()
        if job["finished_at"]:
            break
    if job["status"] != "succeeded":
        FAILED.append(job["status"])
        return ()
    while True:  # the logs land before the exit report; read them once
        page = (await client.get(f"/v1/jobs/{job_id}/logs")).json()
        if page["chunks"]:
            break
        await asyncio.sleep(0.01)
    printed = float(base64.b64decode(page["chunks"][0]["data_b64"]).decode().strip())
    started = datetime.fromisoformat(job["started_at"]).timestamp()
    return printed - t_before, printed - t_after, started - t_before


def figures(results: list[tuple[float, ...]]) -> dict[str, object]:
    ok = [r for r in results if r]
    out: dict[str, object] = {"n": len(results), "succeeded": len(ok)}
    if ok:
        out |= {
            "from_before_post_p50_ms": pct([r[0] for r in ok], 50),
            "from_before_post_p99_ms": pct([r[0] for r in ok], 99),
            "after_post_response_p50_ms": pct([r[1] for r in ok], 50),
            "after_post_response_p99_ms": pct([r[1] for r in ok], 99),
            "to_started_at_p50_ms": pct([r[2] for r in ok], 50),
            "to_started_at_p99_ms": pct([r[2] for r in ok], 99),
        }
    return out


async def run(up: Up, sequential: int, concurrent: int) -> dict[str, object]:
    async with httpx.AsyncClient(
        base_url=up.url, headers=up.headers, timeout=60, limits=httpx.Limits(max_connections=200)
    ) as client:
        for _ in range(5):  # warm-up
            await measure(client, *(await submit(client)))
        seq = [await measure(client, *(await submit(client))) for _ in range(sequential)]
        subs = await asyncio.gather(*(submit(client) for _ in range(concurrent)))
        con = await asyncio.gather(*(measure(client, *s) for s in subs))
        # The same without GPUs (gpu_count 0): no job waits for one of the 8 GPUs to free up, so
        # this is the control plane's latency under concurrent submissions.
        subs = await asyncio.gather(*(submit(client, 0) for _ in range(concurrent)))
        cpu = await asyncio.gather(*(measure(client, *s) for s in subs))
    return {
        "sequential": figures(seq),
        "concurrent": {**figures(list(con)), "note": "8 GPUs for the jobs: most wait for a GPU to free up"},
        "concurrent_no_gpu": figures(list(cpu)),
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
    total = args.sequential + 2 * args.concurrent
    print(
        json.dumps(
            {
                "benchmark": "submit_latency",
                "simulate": args.simulate,
                **result,
                "logging": "default (INFO, access log on)",
                "failed": len(FAILED),
                "failure_rate": round(len(FAILED) / total, 6),
                "targets_ms": {"p50": 100, "p99": 1000},
                "machine": machine(),
            }
        )
    )
    if len(FAILED) / total > MAX_ERROR_RATE:
        sys.exit(f"more than {MAX_ERROR_RATE:.1%} of the jobs did not succeed: {FAILED}")


if __name__ == "__main__":
    main()
