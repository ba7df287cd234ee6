"""Workload shape distributions and the two fragmentation measures the policies score with.

A *shape* is what a task asks for (CPU, GPU count, milli-GPU per GPU, allowed models). Both
measures say how much of a host's free GPU capacity the expected next task could use:

* ``FgdMeasure`` is FGD's (Weng et al., ATC'23): a free GPU is usable by a shape if the shape fits
  on the host at all (CPU and GPU count) and that GPU has at least the shape's milli-GPU free.
* ``CapacityMeasure`` is gpufleet's: how much GPU the shape could actually take if only that shape
  kept arriving, i.e. ``min(instances by GPU, instances by CPU, by RAM) * GPU per instance``. It
  sees CPU running out before GPU and the remainder of a GPU smaller than the shape.

Both are computed from a host's sorted free-milli vector (memoized: hosts repeat the same vectors)
and its free CPU.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpufleet.scheduler.model import WHOLE_GPU, JobRequest

_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Shape:
    """The resource shape of a task, without its identity."""

    cpu_milli: int
    gpu_count: int
    gpu_milli: int
    gpu_models: frozenset[str] = frozenset()
    ram_mb: int = 0

    @classmethod
    def of(cls, job: JobRequest) -> Shape:
        return cls(job.cpu_milli, job.gpu_count, job.gpu_milli, job.gpu_models, job.ram_mb)


class Workload:
    """Counts of task shapes; ``distribution`` turns them into popularity weights."""

    def __init__(self, shapes: Iterable[Shape] = ()) -> None:
        self.counts: Counter[Shape] = Counter(shapes)
        self.total = sum(self.counts.values())

    @classmethod
    def of_jobs(cls, jobs: Iterable[JobRequest]) -> Workload:
        return cls(Shape.of(j) for j in jobs)

    def add(self, shape: Shape) -> None:
        self.counts[shape] += 1
        self.total += 1

    def distribution(self, coverage: float = 1.0, limit: int | None = None) -> list[tuple[Shape, float]]:
        """Most popular shapes first, covering ``coverage`` of tasks (at most ``limit``), renormalized."""
        if not self.total:
            return []
        kept: list[tuple[Shape, int]] = []
        covered = 0
        for shape, n in self.counts.most_common(limit):
            kept.append((shape, n))
            covered += n
            if covered >= coverage * self.total:
                break
        return [(s, n / covered) for s, n in kept]


GpuVector = tuple[tuple[str, int], ...]  # sorted (model, free milli) of a host's usable GPUs


def gpu_vector(models: Sequence[str], free: Sequence[int], uniform_model: str | None) -> GpuVector:
    if uniform_model is not None:
        return tuple((uniform_model, f) for f in sorted(free))
    return tuple(sorted(zip(models, free, strict=True)))


def _gpu_instances(shape: Shape, vec: GpuVector) -> int:
    """How many instances of ``shape`` the GPUs alone could take."""
    models = shape.gpu_models
    if shape.gpu_milli < WHOLE_GPU:
        r = shape.gpu_milli
        return sum(f // r for m, f in vec if not models or m in models)
    full = sum(1 for m, f in vec if f == WHOLE_GPU and (not models or m in models))
    return full // shape.gpu_count


class FgdMeasure:
    """FGD's expected usable GPU: sum over shapes p * (free GPU the shape could use if it fits)."""

    def __init__(self, distribution: list[tuple[Shape, float]]) -> None:
        ordered = sorted(distribution, key=lambda sp: sp[0].cpu_milli)
        self._shapes = [s for s, _ in ordered]
        self._weights = [p for _, p in ordered]
        self._cpus = [s.cpu_milli for s in self._shapes]
        self._cache: dict[GpuVector, list[float]] = {}

    def usable(self, vec: GpuVector, cpu_free: int) -> float:
        cum = self._cache.get(vec)
        if cum is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            cum = [0.0]
            acc = 0.0
            for shape, p in zip(self._shapes, self._weights, strict=True):
                acc += p * _fgd_usable(shape, vec)
                cum.append(acc)
            self._cache[vec] = cum
        return cum[bisect_right(self._cpus, cpu_free)]


def _fgd_usable(shape: Shape, vec: GpuVector) -> int:
    if shape.gpu_count == 0:
        return 0  # FGD counts all free GPU as fragment for a task that asks for none
    models = shape.gpu_models
    if shape.gpu_milli < WHOLE_GPU:
        r = shape.gpu_milli
        return sum(f for m, f in vec if f >= r and (not models or m in models))
    full = sum(1 for m, f in vec if f == WHOLE_GPU and (not models or m in models))
    return full * WHOLE_GPU if full >= shape.gpu_count else 0


class CapacityMeasure:
    """gpufleet's expected usable GPU: sum over shapes p * GPU the shape could really fill."""

    def __init__(self, distribution: list[tuple[Shape, float]]) -> None:
        self._distribution = [(s, p) for s, p in distribution if s.gpu_count > 0]
        self._cache: dict[GpuVector, list[tuple[float, int, int, int, int]]] = {}

    def usable(self, vec: GpuVector, cpu_free: int, ram_free: int) -> float:
        terms = self._cache.get(vec)
        if terms is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            terms = []
            for shape, p in self._distribution:
                n = _gpu_instances(shape, vec)
                if n:
                    terms.append((p * shape.gpu_count * shape.gpu_milli, n, shape.cpu_milli, shape.ram_mb, 0))
            self._cache[vec] = terms
        total = 0.0
        for weight, n, cpu, ram, _ in terms:
            if cpu:
                by_cpu = cpu_free // cpu
                if by_cpu < n:
                    n = by_cpu
            if ram:
                by_ram = ram_free // ram
                if by_ram < n:
                    n = by_ram
            total += weight * n
        return total


def cluster_fragmentation(
    hosts: Iterable[tuple[GpuVector, int]], distribution: list[tuple[Shape, float]]
) -> tuple[int, float]:
    """FGD's cluster fragmentation: (total free GPU milli, expected milli no typical task can use)."""
    measure = FgdMeasure(distribution)
    free_total = 0
    frag = 0.0
    for vec, cpu_free in hosts:
        free = sum(f for _, f in vec)
        free_total += free
        frag += free - measure.usable(vec, cpu_free)
    return free_total, frag
