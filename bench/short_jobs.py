"""Benchmark: 2,000 trivial jobs (`true`) through `gpufleet up` and its one local agent with 8
simulated GPUs. Jobs completed per second (all submitted first, then timed from the first
submission to the last job finished), and the CPU used meanwhile by the server, the agent and
the embedded PostgreSQL. Reference: Slurm, tuned, does 14.1 jobs/s on this machine class.

    python bench/short_jobs.py [--jobs 2000] [--agents 4]

``--agents N``: N agents of 8 simulated GPUs each (`gpufleet up`'s own and N-1 more joined with a
join token, as other machines would be); ``cpu_s`` then has ``agent``, ``agent2``, ...

``jobs_per_s`` counts jobs that succeeded only; the benchmark exits non-zero when more than 0.1%
of the jobs did not succeed (failed, timed out, or never finished). The server runs with the
default logging (INFO, access log on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine
from _up import Up, add_agents, cpu_seconds, start_up


async def run(up: Up, n: int) -> dict[str, object]:
    procs = up.processes()
    async with httpx.AsyncClient(
        base_url=up.url, headers=up.headers, timeout=120, limits=httpx.Limits(max_connections=32)
    ) as client:
        cpu0 = cpu_seconds(procs)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(16)

        async def submit(i: int) -> str:
            async with sem:
                r = await client.post("/v1/jobs", json={"name": f"t{i}", "command": ["true"], "gpu_count": 1})
                r.raise_for_status()
                return str(r.json()["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(n)))
        submitted_s = time.monotonic() - t0
        for job_id in reversed(ids):  # the last one first: by then nearly all are done
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout_s": 30})).json()
                if job["finished_at"]:
                    break
        cpu1 = cpu_seconds(procs)
        jobs = await _all(client)
    # Timed on the database's clock: first job created to last job finished.
    created = min(datetime.fromisoformat(j["created_at"]) for j in jobs)
    finished = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
    elapsed = (finished - created).total_seconds()
    statuses = Counter(j["status"] for j in jobs)
    phases = {  # where a job's time goes, database clock: median ms per phase
        name: _median_ms(jobs, a, b)
        for name, a, b in (
            ("created_to_started", "created_at", "started_at"),  # queueing included: all are submitted first
            ("started_to_finished", "started_at", "finished_at"),
        )
    }
    succeeded = statuses.get("succeeded", 0)
    return {
        "jobs": n,
        "statuses": dict(statuses),
        "succeeded": succeeded,
        "failure_rate": round(1 - succeeded / n, 6) if n else 1.0,
        "elapsed_s": round(elapsed, 2),
        "submit_s": round(submitted_s, 2),
        # Successes only: a job that failed fast is not throughput.
        "jobs_per_s": round(succeeded / elapsed, 1),
        "phase_median_ms": phases,
        "cpu_s": {k: round(cpu1[k] - cpu0.get(k, 0.0), 1) for k in cpu1},
        "cpu_pct_of_one_core": {k: round(100 * (cpu1[k] - cpu0.get(k, 0.0)) / elapsed) for k in cpu1},
    }


def _median_ms(jobs: list[dict[str, object]], start: str, end: str) -> float | None:
    spans = sorted(
        (datetime.fromisoformat(str(j[end])) - datetime.fromisoformat(str(j[start]))).total_seconds()
        for j in jobs
        if j.get(start) and j.get(end)
    )
    return round(1000 * spans[len(spans) // 2], 1) if spans else None


async def _all(client: httpx.AsyncClient) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/jobs", params=params)).json()
        out += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--simulate", default="8xH100-80GB")
    ap.add_argument("--agents", type=int, default=1, help="agents (hosts) of --simulate GPUs each")
    args = ap.parse_args()
    up = start_up(args.simulate)
    try:
        add_agents(up, args.agents - 1, args.simulate)
        result = asyncio.run(run(up, args.jobs))
    finally:
        up.stop()
    print(
        json.dumps(
            {
                "benchmark": "short_jobs",
                "simulate": args.simulate,
                "agents": args.agents,
                **result,
                "logging": "default (INFO, access log on)",
                "target_jobs_per_s": 140,
                "slurm_tuned_jobs_per_s": 14.1,
                "machine": machine(),
            }
        )
    )
    if float(str(result["failure_rate"])) > MAX_ERROR_RATE:
        sys.exit(f"more than {MAX_ERROR_RATE:.1%} of the jobs did not succeed: {result['statuses']}")


if __name__ == "__main__":
    main()
