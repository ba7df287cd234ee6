"""Allocator decision time at fleet scale (5,000 hosts x 8 GPUs by default); prints one JSON object.

    python bench/allocator_speed.py [--hosts 5000] [--decisions 20000] [--policy default] [--seed 1]

A mixed workload (whole 1/2/4/8-GPU jobs, fractional GPUs, CPU-only jobs, two GPU models, some
jobs pinned to a model) first fills the fleet to about 85% of its GPU, then keeps it there: each
step releases a random running job and places a new one. Only ``ClusterState.place`` is timed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from gpufleet.scheduler.cluster import ClusterState
from gpufleet.scheduler.model import GpuState, HostState, JobRequest, Placement
from gpufleet.simulation.protocol import make_policy


def fleet(n: int) -> list[HostState]:
    hosts = []
    for i in range(n):
        model, memory = ("A100-80GB", 81920) if i % 4 else ("H100-80GB", 81920)
        gpus = tuple(GpuState(f"h{i}/g{g}", model, memory) for g in range(8))
        hosts.append(HostState(f"h{i}", f"host-{i:05d}", 128_000, 128_000, 1_048_576, 1_048_576, gpus))
    return hosts


def job(rng: random.Random, n: int) -> JobRequest:
    kind = rng.random()
    models = frozenset({"H100-80GB"}) if rng.random() < 0.1 else frozenset()
    if kind < 0.45:
        return JobRequest(f"j{n}", 1, 1000, gpu_models=models, cpu_milli=rng.choice([4000, 8000, 12000]), ram_mb=32768)
    if kind < 0.75:
        milli = rng.choice([100, 250, 300, 500, 700])
        return JobRequest(f"j{n}", 1, milli, gpu_models=models, cpu_milli=rng.choice([1000, 2000, 4000]), ram_mb=8192)
    if kind < 0.9:
        count = rng.choice([2, 4, 8])
        return JobRequest(f"j{n}", count, 1000, gpu_models=models, cpu_milli=4000 * count, ram_mb=65536)
    return JobRequest(f"j{n}", 0, 0, cpu_milli=rng.choice([2000, 8000, 16000]), ram_mb=16384)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--policy", default="default")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cluster = ClusterState(fleet(args.hosts))
    policy = make_policy(args.policy, [], args.seed)
    running: list[Placement] = []
    n = 0
    fill_start = time.perf_counter()
    while cluster.allocated_gpu_milli < 0.85 * cluster.total_gpu_milli:
        n += 1
        result = cluster.place(job(rng, n), policy, explain=False)
        if isinstance(result, Placement):
            running.append(result)
    fill_seconds = time.perf_counter() - fill_start
    fill_jobs = n

    timings: list[int] = []
    placed = 0
    clock = time.perf_counter_ns
    churn_start = time.perf_counter()
    for _ in range(args.decisions):
        if running:
            cluster.release(running.pop(rng.randrange(len(running))))
        n += 1
        request = job(rng, n)
        start = clock()
        result = cluster.place(request, policy)
        timings.append(clock() - start)
        if isinstance(result, Placement):
            running.append(result)
            placed += 1
    churn_seconds = time.perf_counter() - churn_start
    timings.sort()

    def pct(q: float) -> float:
        return round(timings[min(len(timings) - 1, int(q * len(timings)))] / 1000, 1)

    json.dump(
        {
            "hosts": args.hosts,
            "gpus": args.hosts * 8,
            "policy": args.policy,
            "fill_to_85pct": {
                "jobs": fill_jobs,
                "seconds": round(fill_seconds, 2),
                "placements_per_s": round(fill_jobs / fill_seconds),
            },
            "steady_state": {
                "decisions": args.decisions,
                "placed": placed,
                "gpu_allocated_pct": round(100 * cluster.allocated_gpu_milli / cluster.total_gpu_milli, 2),
                "decision_us_p50": pct(0.5),
                "decision_us_p99": pct(0.99),
                "decision_us_mean": round(sum(timings) / len(timings) / 1000, 1),
                "placements_per_s_including_release": round(placed / churn_seconds),
            },
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
