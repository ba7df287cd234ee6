"""Benchmark: `POST /v1/jobs/{id}/cancel` to the job's process signalled, through `gpufleet up`.

Each job traps SIGTERM and prints the wall clock (`date +%s.%N`) from the trap; the latency is
that time minus the time just before the client sent the cancel (same machine, same clock). A job
is cancelled once it runs and has printed its first line, and after a pause (``--settle-s``) so the
agent's long-poll is waiting again with the run listed, as it is for a job that has run a while.
The cancels are sequential; ``--background`` other jobs keep running meanwhile on the host.
Before stops were pushed through the assignment long-poll, the cancel reached the agent with its
next heartbeat (every 10 s).

    python bench/cancel_latency.py [--jobs 30] [--background 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from _up import Up, start_up

SCRIPT = "trap 'date +%s.%N; exit 143' TERM; echo ready; sleep 600 & wait"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1)


async def stdout(client: httpx.AsyncClient, job_id: str) -> str:
    page = (await client.get(f"/v1/jobs/{job_id}/logs")).json()
    return "".join(base64.b64decode(c["data_b64"]).decode() for c in page["chunks"] if c["stream"] == "stdout")


async def start(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/jobs", json={"name": "cancel-lat", "script": SCRIPT, "gpu_count": 1})
    r.raise_for_status()
    job_id = str(r.json()["id"])
    deadline = time.monotonic() + 60
    while "ready" not in await stdout(client, job_id):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not start")
        await asyncio.sleep(0.02)
    return job_id


async def cancel(client: httpx.AsyncClient, job_id: str) -> float | None:
    """Seconds from just before the cancel to the trap's timestamp; None if the job did not end cancelled."""
    before = time.time()
    (await client.post(f"/v1/jobs/{job_id}/cancel")).raise_for_status()
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout_s": 30})).json()
        if job["finished_at"]:
            break
    lines = (await stdout(client, job_id)).split()
    if job["status"] != "cancelled" or len(lines) < 2:
        return None
    return float(lines[1]) - before


async def run(up: Up, jobs: int, background: int, settle_s: float) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=up.url, headers=up.headers, timeout=60) as client:
        others = [await start(client) for _ in range(background)]
        results: list[float | None] = []
        for i in range(jobs + 2):  # two warm-ups
            job_id = await start(client)
            await asyncio.sleep(settle_s)
            latency = await cancel(client, job_id)
            if i >= 2:
                results.append(latency)
        for job_id in others:
            await cancel(client, job_id)
    ok = [r for r in results if r is not None]
    out: dict[str, object] = {"n": len(results), "cancelled": len(ok)}
    if ok:
        out |= {"p50_ms": pct(ok, 50), "p99_ms": pct(ok, 99), "max_ms": pct(ok, 100)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--background", type=int, default=4, help="other jobs running on the host meanwhile")
    ap.add_argument("--settle-s", type=float, default=0.5)
    ap.add_argument("--simulate", default="8xH100-80GB")
    args = ap.parse_args()
    up = start_up(args.simulate)
    try:
        result = asyncio.run(run(up, args.jobs, args.background, args.settle_s))
    finally:
        up.stop()
    print(
        json.dumps(
            {
                "benchmark": "cancel_latency",
                "simulate": args.simulate,
                "background_jobs": args.background,
                "cancel_to_sigterm": result,
                "target_p99_ms": 500,
                "machine": machine(),
            }
        )
    )
    if result["cancelled"] != result["n"]:
        sys.exit("some jobs did not end cancelled")


if __name__ == "__main__":
    main()
