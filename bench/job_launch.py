"""Benchmark: the agent's CPU cost of starting a job, per-job supervisor vs the launcher.

Runs trivial jobs (`true`) straight through ``ProcessRuntime`` (no server), 8 at a time: start,
wait, forget. Each trial is a fresh process, so its CPU time (getrusage: itself, plus its reaped
children: the launcher and, through it, every supervisor and job) is the runtime's alone. Modes
alternate trial by trial; medians per mode.

    python bench/job_launch.py [--jobs 500] [--trials 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

MODES = ("shim", "launcher")


async def trial(mode: str, n: int, concurrency: int = 8) -> dict[str, float]:
    import psutil

    from gpufleet.agent.processes.runtime import ProcessRuntime, ProcessSpec

    with tempfile.TemporaryDirectory() as tmp:
        rt = ProcessRuntime(Path(tmp) / "state", work_root=Path(tmp) / "work", use_launcher=mode == "launcher")
        await rt.start(ProcessSpec("warm", 0, argv=["true"]))  # the launcher's own start is not per job
        await rt.wait("warm")
        rt.forget("warm")
        launcher_rss = 0.0
        if rt._launcher.pid is not None:
            launcher_rss = psutil.Process(rt._launcher.pid).memory_info().rss / 2**20
        jobs = iter(range(n))
        failed = 0

        async def worker() -> None:
            nonlocal failed
            for i in jobs:
                await rt.start(ProcessSpec(f"j{i}", 1, argv=["true"]))
                failed += (await rt.wait(f"j{i}")).status != "succeeded"
                rt.forget(f"j{i}")

        self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
        await rt.close()  # reaps the launcher: its children's CPU becomes ours
        self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    agent = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    children = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return {
        "agent_ms_per_job": 1000 * agent / n,
        "children_ms_per_job": 1000 * children / n,
        "total_ms_per_job": 1000 * (agent + children) / n,
        "jobs_per_s": n / elapsed,
        "failed": failed,
        "launcher_rss_mib": launcher_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trial", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(asyncio.run(trial(args.trial, args.jobs))))
        return
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(args.trials):
        for mode in MODES:  # interleaved: both modes see the same machine noise
            out = subprocess.run(
                [sys.executable, __file__, "--trial", mode, "--jobs", str(args.jobs)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[mode].append(json.loads(out))
    result: dict[str, object] = {"jobs_per_trial": args.jobs, "trials": args.trials, "concurrency": 8}
    for mode in MODES:
        result[mode] = {k: round(statistics.median(r[k] for r in runs[mode]), 2) for k in runs[mode][0]}
    shim, launcher = runs["shim"], runs["launcher"]
    result["total_cpu_ratio_shim_over_launcher"] = round(
        statistics.median(s["total_ms_per_job"] for s in shim)
        / statistics.median(x["total_ms_per_job"] for x in launcher),
        2,
    )
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
