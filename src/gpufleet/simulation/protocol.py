"""The allocation-quality protocol of Weng et al. (ATC'23) on a trace, and its metrics.

Arrivals, for one seed (``rng = random.Random(seed)``): all jobs of the list in file order, then
``rng.choice(jobs)`` appended (renamed ``<id>#<n>``) while the total requested GPU milli stays
within ``inflation`` x capacity (the first draw that would pass it stops the sampling), then
``rng.shuffle`` of the whole list. Each job is placed in that order and never leaves; one that
does not fit is counted as failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import fmean

from gpufleet.scheduler.allocator import DEFAULT_MAX_CANDIDATES, DEFAULT_SCAN_LIMIT
from gpufleet.scheduler.allocator import make_policy as make_named_policy
from gpufleet.scheduler.cluster import ClusterState
from gpufleet.scheduler.fragmentation import Shape, Workload, cluster_fragmentation, gpu_vector
from gpufleet.scheduler.model import HostState, JobRequest, Placement
from gpufleet.scheduler.policies import Policy

FRAGMENTATION_AT = 0.9


def arrivals(jobs: Sequence[JobRequest], capacity_milli: int, inflation: float, seed: int) -> list[JobRequest]:
    """The protocol's arrival order for one seed (see the module docstring)."""
    rng = random.Random(seed)
    out = list(jobs)
    demand = sum(j.total_gpu_milli for j in out)
    limit = inflation * capacity_milli
    if any(j.total_gpu_milli for j in jobs):
        n = 0
        while True:
            job = rng.choice(jobs)
            if demand + job.total_gpu_milli > limit:
                break
            n += 1
            out.append(replace(job, id=f"{job.id}#{n}"))
            demand += job.total_gpu_milli
    rng.shuffle(out)
    return out


@dataclass(frozen=True, slots=True)
class PolicyBounds:
    """How much of the cluster one decision looks at; the defaults are production's."""

    max_candidates: int | None = DEFAULT_MAX_CANDIDATES
    scan_limit: int | None = DEFAULT_SCAN_LIMIT


def make_policy(name: str, jobs: Sequence[JobRequest], seed: int, bounds: PolicyBounds = PolicyBounds()) -> Policy:
    """The production policy by name; ``fgd`` gets the job list's shape distribution as its target
    workload, as in FGD; ``default`` learns the distribution online from the jobs it is asked to place."""
    workload = Workload.of_jobs(jobs) if name == "fgd" else None
    return make_named_policy(
        name, workload=workload, seed=seed, max_candidates=bounds.max_candidates, scan_limit=bounds.scan_limit
    )


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    jobs: int
    failed: int
    failed_gpu_milli: int
    alloc_at_100: float  # % of GPU capacity allocated when arrived demand reached 100%
    alloc_at_end: float  # ... after the last arrival (inflation x capacity)
    frag_at_90: float  # % of GPU capacity fragmented when arrived demand reached 90%
    decision_us_p50: float
    decision_us_p99: float


def run(
    hosts: Sequence[HostState],
    jobs: Sequence[JobRequest],
    policy_name: str,
    seed: int,
    inflation: float = 1.3,
    on_progress: Callable[[int, int], None] | None = None,
    bounds: PolicyBounds = PolicyBounds(),
) -> SeedResult:
    """Run the protocol once with the policy as production bounds it (unless ``bounds`` says
    otherwise); ``on_progress(done, total)`` is called every 1,000 jobs."""
    cluster = ClusterState(hosts)
    capacity = cluster.total_gpu_milli
    if capacity == 0:
        raise ValueError("the hosts have no usable GPU")
    order = arrivals(jobs, capacity, inflation, seed)
    policy = make_policy(policy_name, jobs, seed, bounds)
    target = Workload.of_jobs(jobs).distribution()
    timings: list[int] = []
    arrived = failed = failed_milli = 0
    alloc_100: float | None = None
    frag_90: float | None = None
    clock = time.perf_counter_ns
    place = cluster.place
    for n, job in enumerate(order, start=1):
        start = clock()
        result = place(job, policy, explain=False)
        timings.append(clock() - start)
        if not isinstance(result, Placement):
            failed += 1
            failed_milli += job.total_gpu_milli
        arrived += job.total_gpu_milli
        if frag_90 is None and arrived >= FRAGMENTATION_AT * capacity:
            frag_90 = fragmentation_pct(cluster, target)
        if alloc_100 is None and arrived >= capacity:
            alloc_100 = 100 * cluster.allocated_gpu_milli / capacity
        if on_progress is not None and n % 1000 == 0:
            on_progress(n, len(order))
    end = 100 * cluster.allocated_gpu_milli / capacity
    timings.sort()
    return SeedResult(
        seed=seed,
        jobs=len(order),
        failed=failed,
        failed_gpu_milli=failed_milli,
        alloc_at_100=end if alloc_100 is None else alloc_100,
        alloc_at_end=end,
        frag_at_90=fragmentation_pct(cluster, target) if frag_90 is None else frag_90,
        decision_us_p50=_percentile(timings, 0.50) / 1000,
        decision_us_p99=_percentile(timings, 0.99) / 1000,
    )


def fragmentation_pct(cluster: ClusterState, target: list[tuple[Shape, float]]) -> float:
    """FGD's cluster fragmentation w.r.t. ``target``, as % of total GPU capacity."""
    hosts = ((gpu_vector(h.models, h.free, h.uniform_model), h.cpu_free) for h in cluster.hosts if h.ready and h.free)
    _, frag = cluster_fragmentation(hosts, target)
    return 100 * frag / max(1, cluster.total_gpu_milli)


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


@dataclass(frozen=True, slots=True)
class Summary:
    policy: str
    seeds: tuple[SeedResult, ...]

    def mean(self, field: str) -> float:
        return fmean(float(getattr(s, field)) for s in self.seeds)


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"42-51"``, ``"1,3,5-7"`` or ``"7"``; raises ValueError with a readable message."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ValueError(f"bad seed range {text!r}: use e.g. 42-51 or 1,3,5-7") from None
        if first < 0 or last < first:
            raise ValueError(f"bad seed range {part!r}: need 0 <= first <= last")
        if last - first >= 10_000:
            raise ValueError(f"seed range {part!r} is too long (at most 10,000 seeds)")
        seeds.extend(range(first, last + 1))
    return seeds


METRICS = ("alloc_at_100", "alloc_at_end", "frag_at_90", "failed", "decision_us_p50", "decision_us_p99")


def report(
    policy: str, inflation: float, results: Sequence[SeedResult], bounds: PolicyBounds = PolicyBounds()
) -> dict[str, object]:
    """One JSON-ready object: the settings used, every seed's figures and their means."""
    seeds = [
        {
            "seed": r.seed,
            "jobs": r.jobs,
            "failed": r.failed,
            "failed_gpu_milli": r.failed_gpu_milli,
            "alloc_pct_at_100": round(r.alloc_at_100, 3),
            "alloc_pct_at_end": round(r.alloc_at_end, 3),
            "frag_pct_at_90": round(r.frag_at_90, 3),
            "decision_us_p50": round(r.decision_us_p50, 1),
            "decision_us_p99": round(r.decision_us_p99, 1),
        }
        for r in results
    ]
    summary = Summary(policy, tuple(results))
    mean = {
        "alloc_pct_at_100": round(summary.mean("alloc_at_100"), 3),
        "alloc_pct_at_end": round(summary.mean("alloc_at_end"), 3),
        "frag_pct_at_90": round(summary.mean("frag_at_90"), 3),
        "failed": round(summary.mean("failed"), 1),
        "decision_us_p50": round(summary.mean("decision_us_p50"), 1),
        "decision_us_p99": round(summary.mean("decision_us_p99"), 1),
    }
    return {
        "policy": policy,
        "max_candidates": bounds.max_candidates,
        "scan_limit": bounds.scan_limit,
        "inflation": inflation,
        "seeds": seeds,
        "mean": mean,
    }
