"""Placement policies: each scores the ways a job fits on candidate hosts; the lowest score wins.

* ``best-fit``: the host left with the least free GPU and CPU (in GPU-equivalents).
* ``fgd``: FGD (Weng et al., ATC'23) re-implemented: the least increase of expected
  fragmentation over the workload's shape distribution.
* ``default``: gpufleet's: the least loss of *capacity* the expected next tasks could really
  use (CPU- and remainder-aware, see fragmentation.CapacityMeasure), learned online from the jobs
  seen so far; ties go to best-fit.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from gpufleet.scheduler.cluster import ClusterState, Host, Option, StateKey
from gpufleet.scheduler.fragmentation import (
    CapacityMeasure,
    FgdMeasure,
    GpuVector,
    Shape,
    Workload,
    gpu_vector,
)
from gpufleet.scheduler.model import JobRequest

Score = tuple[float, ...]


class Policy(Protocol):
    name: str

    def choose(self, cluster: ClusterState, job: JobRequest) -> tuple[Host, Option] | None:
        """The host and GPU positions for ``job``, or None if it fits nowhere."""
        ...


class ScoringPolicy:
    """Walks the cluster's candidates (tightest first) and keeps the lowest-scoring option.

    ``max_candidates`` bounds how many fitting hosts are scored per decision (None: all), which
    keeps a decision fast on a large fleet.
    """

    name = "scoring"
    dedupe = True  # False for a policy whose score depends on more than Host.state_key()

    def __init__(self, max_candidates: int | None = None) -> None:
        self.max_candidates = max_candidates

    def choose(self, cluster: ClusterState, job: JobRequest) -> tuple[Host, Option] | None:
        self.observe(job)
        best: tuple[Host, Option] | None = None
        best_score: Score = ()
        remaining = self.max_candidates
        hosts = cluster.hosts
        seen: set[StateKey] = set()
        scanned = 8 * remaining if remaining is not None else 0
        for idx in cluster.candidates(job):
            h = hosts[idx]
            options = cluster.options(h, job)
            if not options:
                continue
            if self.dedupe:
                # hosts in the same state score the same; the first (tightest bucket) wins anyway,
                # but a fleet of identical idle hosts must not be walked to its end either
                key = h.state_key()
                if key in seen:
                    if remaining is not None:
                        scanned -= 1
                        if scanned <= 0:
                            break
                    continue
                seen.add(key)
            self.begin_host(cluster, h, job)
            for option in options:
                score = self.score(cluster, h, job, option)
                if best is None or score < best_score:
                    best, best_score = (h, option), score
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    break
        return best

    def observe(self, job: JobRequest) -> None:
        """Hook for policies that learn the workload from the jobs they are asked to place."""

    def begin_host(self, cluster: ClusterState, h: Host, job: JobRequest) -> None:
        """Hook called before the options of one host are scored."""

    def score(self, cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> Score:
        raise NotImplementedError


def _after(h: Host, job: JobRequest, option: Option) -> list[int]:
    free = h.free.copy()
    for i in option:
        free[i] -= job.gpu_milli
    return free


def _best_fit(cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> float:
    """Free GPU plus free CPU left on the host after the placement, in GPU-equivalents."""
    gpus = max(1, cluster.total_gpu_milli) / 1000
    cpu_per_gpu = max(1, cluster.total_cpu_milli) / gpus
    gpu_left = sum(h.free) - job.gpu_count * job.gpu_milli
    return gpu_left / 1000 + (h.cpu_free - job.cpu_milli) / cpu_per_gpu


def _gpu_fit(h: Host, option: Option) -> int:
    """Prefer the tightest GPU for a fractional job (pack partly used GPUs)."""
    return h.free[option[0]] if len(option) == 1 else 0


class BestFit(ScoringPolicy):
    name = "best-fit"

    def score(self, cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> Score:
        return (_best_fit(cluster, h, job, option), _gpu_fit(h, option))


class RandomFit(ScoringPolicy):
    """Uniformly random among fitting hosts (seeded): the baseline every paper starts from."""

    name = "random"
    dedupe = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__(None)
        self._rng = random.Random(seed)

    def score(self, cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> Score:
        return (self._rng.random(),)


class _LearningPolicy(ScoringPolicy):
    """Keeps a shape distribution: a fixed target workload, or one learned from jobs seen so far.

    A learned distribution is rebuilt whenever the number of jobs seen has grown by a quarter
    (and at least every ``refresh_every`` jobs) so its caches stay warm between rebuilds.
    """

    refresh_growth = 1.25
    refresh_every = 4096

    def __init__(self, workload: Workload | None = None, max_candidates: int | None = None) -> None:
        super().__init__(max_candidates)
        self._fixed = workload is not None
        self.workload = workload if workload is not None else Workload()
        self._built_at = 0
        self._host_cache: dict[int, tuple[int, float]] = {}
        self._build()

    def _build(self) -> None:
        self._built_at = self.workload.total
        self._host_cache.clear()
        self.rebuild(self.workload.distribution())

    def rebuild(self, distribution: list[tuple[Shape, float]]) -> None:
        raise NotImplementedError

    def observe(self, job: JobRequest) -> None:
        if self._fixed:
            return
        self.workload.add(Shape.of(job))
        total = self.workload.total
        if total >= self._built_at * self.refresh_growth or total - self._built_at >= self.refresh_every:
            self._build()

    def _before(self, h: Host, compute: Callable[[GpuVector, Host], float]) -> float:
        cached = self._host_cache.get(h.idx)
        if cached is not None and cached[0] == h.version:
            return cached[1]
        value = compute(h.state_key()[0], h)
        self._host_cache[h.idx] = (h.version, value)
        return value


class Fgd(_LearningPolicy):
    """FGD: minimise the growth of expected fragmentation; ties by host order, as k8s would randomly."""

    name = "fgd"

    def rebuild(self, distribution: list[tuple[Shape, float]]) -> None:
        self.measure = FgdMeasure(distribution)
        self._now = 0.0

    def _usable(self, vec: GpuVector, h: Host) -> float:
        return self.measure.usable(vec, h.cpu_free)

    def begin_host(self, cluster: ClusterState, h: Host, job: JobRequest) -> None:
        self._now = self._before(h, self._usable)

    def score(self, cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> Score:
        vec = gpu_vector(h.models, _after(h, job, option), h.uniform_model)
        after = self.measure.usable(vec, h.cpu_free - job.cpu_milli)
        # fragmentation = free - usable; free drops by the job's GPU wherever it goes
        return (round(self._now - after, 6),)


class CapacityAware(_LearningPolicy):
    """gpufleet's default: least loss of usable GPU, averaging FGD's measure and the capacity one.

    FGD's measure alone misses CPU running out before GPU and GPU remainders smaller than a task;
    the capacity measure alone undervalues GPUs a task could still partly use. Their mean beat
    either one on both openb traces (docs/scheduler.md). Ties go to the first candidate, i.e. the
    tightest GPU and the host with the fewest idle GPUs.
    """

    name = "default"

    def __init__(
        self,
        workload: Workload | None = None,
        max_candidates: int | None = 32,
        fgd_weight: float = 0.5,
        coverage: float = 0.95,
    ) -> None:
        self.fgd_weight = fgd_weight
        self.coverage = coverage
        super().__init__(workload, max_candidates)

    def rebuild(self, distribution: list[tuple[Shape, float]]) -> None:
        if self.coverage < 1.0:
            distribution = self.workload.distribution(self.coverage)
        self.capacity = CapacityMeasure(distribution)
        self.fgd = FgdMeasure(distribution)
        self._now = 0.0

    def _usable(self, vec: GpuVector, h: Host) -> float:
        return self._value(vec, h.cpu_free, h.ram_free)

    def _value(self, vec: GpuVector, cpu_free: int, ram_free: int) -> float:
        w = self.fgd_weight
        return w * self.fgd.usable(vec, cpu_free) + (1 - w) * self.capacity.usable(vec, cpu_free, ram_free)

    def begin_host(self, cluster: ClusterState, h: Host, job: JobRequest) -> None:
        self._now = self._before(h, self._usable)

    def score(self, cluster: ClusterState, h: Host, job: JobRequest, option: Option) -> Score:
        vec = gpu_vector(h.models, _after(h, job, option), h.uniform_model)
        after = self._value(vec, h.cpu_free - job.cpu_milli, h.ram_free - job.ram_mb)
        return (round(self._now - after, 6),)


POLICIES: dict[str, Callable[..., ScoringPolicy]] = {
    "default": CapacityAware,
    "best-fit": BestFit,
    "fgd": Fgd,
    "random": RandomFit,
}


class BoundedScan:
    """Adapter: the wrapped policy first sees only the ``scan_limit`` tightest candidate hosts.

    ``ScoringPolicy.max_candidates`` counts hosts *scored*; hosts in the same state are skipped
    without being counted, so on a large idle fleet (thousands of identical hosts) a decision
    still walks every host. The candidates come tightest first, so the first few hold the best
    fits; only when none of them fits is the whole cluster searched (no false "cannot place").
    """

    def __init__(self, inner: Policy, scan_limit: int | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.scan_limit = scan_limit

    def choose(self, cluster: ClusterState, job: JobRequest) -> tuple[Host, Option] | None:
        if self.scan_limit is not None:
            found = self.inner.choose(cast(ClusterState, _Capped(cluster, self.scan_limit)), job)
            if found is not None:
                return found
        return self.inner.choose(cluster, job)


class _Capped:
    """A ClusterState whose ``candidates`` stop after ``limit`` hosts; everything else delegates."""

    def __init__(self, cluster: ClusterState, limit: int) -> None:
        self._cluster = cluster
        self._limit = limit

    def candidates(self, job: JobRequest) -> Iterator[int]:
        return itertools.islice(self._cluster.candidates(job), self._limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)
