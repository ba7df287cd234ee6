"""ClusterState: the mutable, indexed view of free capacity that every placement decision runs on.

Indexes keep a decision away from a scan of every GPU: hosts are bucketed, per GPU model and for
all models together, by how many fully free GPUs they have and by the free milli-GPU values of
their partly used GPUs. Candidates come out of the buckets tightest first, so a policy that looks
at only a few of them still sees the best-fitting hosts. Full scans happen only to explain why a
job cannot be placed.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from gpufleet.scheduler.fragmentation import GpuVector, gpu_vector
from gpufleet.scheduler.model import (
    AVAILABLE,
    READY,
    WHOLE_GPU,
    GpuShare,
    HostState,
    JobRequest,
    Placement,
    Unschedulable,
    reserve_memory,
)
from gpufleet.scheduler.reasons import HostKind, StaticFit
from gpufleet.scheduler.reasons import explain as explain_job

if TYPE_CHECKING:
    from gpufleet.scheduler.policies import Policy

ANY = "*"  # the index key that covers every GPU model

Option = tuple[int, ...]  # GPU positions on a host
StateKey = tuple[GpuVector, int, int]  # sorted (model, free milli) of GPUs, free CPU, free RAM


class Host:
    """Mutable per-host state; policies read it, only ClusterState writes it."""

    __slots__ = (
        "cpu_free",
        "cpu_total",
        "free",
        "gpu_ids",
        "gpu_status",
        "hidden_free",
        "id",
        "idx",
        "key_cache",
        "mem_free",
        "mem_total",
        "models",
        "name",
        "ram_free",
        "ram_total",
        "ready",
        "status",
        "uniform_model",
        "usable",
        "version",
    )

    def __init__(self, idx: int, state: HostState) -> None:
        self.idx = idx
        self.id = state.id
        self.name = state.name
        self.status = state.status
        self.ready = state.status == READY
        self.cpu_total = state.cpu_milli_total
        self.cpu_free = state.cpu_milli_free
        self.ram_total = state.ram_mb_total
        self.ram_free = state.ram_mb_free
        self.gpu_ids = [g.id for g in state.gpus]
        self.models = [g.model for g in state.gpus]
        self.mem_total = [g.memory_mib for g in state.gpus]
        self.mem_free = [g.free_memory_mib for g in state.gpus]
        self.usable = [self.ready and g.status == AVAILABLE for g in state.gpus]
        self.gpu_status = [g.status for g in state.gpus]
        self.hidden_free = [g.free_milli for g in state.gpus]  # kept for snapshot() only
        # an unusable GPU counts as having nothing free, so no index or policy ever offers it
        self.free = [g.free_milli if ok else 0 for g, ok in zip(state.gpus, self.usable, strict=True)]
        models = set(self.models)
        self.uniform_model = next(iter(models)) if len(models) == 1 else None
        self.version = 0  # bumped on every change; policies key their caches on it
        self.key_cache: tuple[int, StateKey] | None = None

    def state_key(self) -> StateKey:
        """What a policy's score can depend on: equal keys mean interchangeable hosts."""
        cached = self.key_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        key = (gpu_vector(self.models, self.free, self.uniform_model), self.cpu_free, self.ram_free)
        self.key_cache = (self.version, key)
        return key

    def model_keys(self) -> set[str]:
        return {m for m, ok in zip(self.models, self.usable, strict=True) if ok} | {ANY}

    def full_count(self, key: str) -> int:
        return sum(
            1 for f, m in zip(self.free, self.models, strict=True) if f == WHOLE_GPU and (key == ANY or m == key)
        )

    def partial_values(self, key: str) -> list[int]:
        return [
            f for f, m in zip(self.free, self.models, strict=True) if 0 < f < WHOLE_GPU and (key == ANY or m == key)
        ]

    def gpu_free_total(self) -> int:
        return sum(self.free)


class _ModelIndex:
    """Hosts bucketed by fully free GPU count and by the free milli of their partly used GPUs."""

    __slots__ = ("by_full", "by_partial", "partial_keys")

    def __init__(self) -> None:
        self.by_full: dict[int, set[int]] = {}
        self.by_partial: dict[int, dict[int, int]] = {}  # free milli -> {host idx: GPU count}
        self.partial_keys: list[int] = []  # sorted non-empty keys of by_partial

    def add(self, idx: int, full: int, partial: Iterable[int]) -> None:
        self.by_full.setdefault(full, set()).add(idx)
        for v in partial:
            bucket = self.by_partial.get(v)
            if bucket is None:
                bucket = self.by_partial[v] = {}
                insort(self.partial_keys, v)
            bucket[idx] = bucket.get(idx, 0) + 1

    def remove(self, idx: int, full: int, partial: Iterable[int]) -> None:
        self.by_full[full].discard(idx)
        for v in partial:
            bucket = self.by_partial[v]
            n = bucket[idx] - 1
            if n:
                bucket[idx] = n
            else:
                del bucket[idx]
                if not bucket:
                    del self.by_partial[v]
                    self.partial_keys.remove(v)


class ClusterState:
    """Free capacity of a set of hosts, with indexes, that places and releases jobs in place."""

    def __init__(self, hosts: Sequence[HostState]) -> None:
        self.hosts: list[Host] = [Host(i, h) for i, h in enumerate(hosts)]
        self._by_id = {h.id: h for h in self.hosts}
        if len(self._by_id) != len(self.hosts):
            raise ValueError("host ids must be unique")
        self._index: dict[str, _ModelIndex] = {}
        self.total_gpu_milli = 0
        self.allocated_gpu_milli = 0
        self.total_cpu_milli = 0
        for h in self.hosts:
            if not h.ready:
                continue
            self._index_add(h)
            self.total_cpu_milli += h.cpu_total
            for ok in h.usable:
                if ok:
                    self.total_gpu_milli += WHOLE_GPU
            self.allocated_gpu_milli += sum(WHOLE_GPU - f for f, ok in zip(h.free, h.usable, strict=True) if ok)
        self.models = sorted({m for h in self.hosts for m, ok in zip(h.models, h.usable, strict=True) if ok})
        # (models, memory) -> which GPUs suit: reasons.explain's part that placements do not change
        self.explain_cache: dict[tuple[frozenset[str], int], StaticFit] = {}
        self.host_kinds: list[HostKind] | None = None

    # -- indexes -------------------------------------------------------------------------------

    def _index_add(self, h: Host) -> None:
        for key in h.model_keys():
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = _ModelIndex()
            index.add(h.idx, h.full_count(key), h.partial_values(key))

    def _index_remove(self, h: Host) -> None:
        for key in h.model_keys():
            self._index[key].remove(h.idx, h.full_count(key), h.partial_values(key))

    def candidates(self, job: JobRequest) -> Iterator[int]:
        """Ready hosts that may fit ``job`` by their GPUs, tightest GPU fit first, each once.

        CPU, RAM and GPU memory are not checked here; ``options`` does that.
        """
        keys = sorted(job.gpu_models) if job.gpu_models else [ANY]
        indexes = [self._index[k] for k in keys if k in self._index]
        if job.gpu_count == 0:
            indexes = [self._index[ANY]] if ANY in self._index else []
        seen: set[int] = set()
        # several allowed models: a host may mix them, so each index is walked from its lowest bucket
        mixed = len(indexes) > 1
        for index in indexes:
            yield from _candidates_one(index, job, seen, mixed)

    # -- fitting -------------------------------------------------------------------------------

    def options(self, h: Host, job: JobRequest) -> list[Option]:
        """The distinct ways ``job`` fits on ``h`` (GPU positions), or [] if it does not fit."""
        if not h.ready or h.cpu_free < job.cpu_milli or h.ram_free < job.ram_mb:
            return []
        k = job.gpu_count
        if k == 0:
            return [()]
        r = job.gpu_milli
        allowed = job.gpu_models
        free = h.free
        if r == WHOLE_GPU:
            picks = [
                i
                for i, f in enumerate(free)
                if f == WHOLE_GPU
                and (not allowed or h.models[i] in allowed)
                and (h.mem_total[i] >= job.memory_min_mib or h.mem_total[i] == 0)
            ]
            if len(picks) < k:
                return []
            if len(picks) > k and job.memory_min_mib:
                # leave the GPUs with the most memory for the jobs that need it
                picks.sort(key=lambda i: h.mem_total[i])
            return [tuple(picks[:k])]
        options: list[Option] = []
        seen: set[int] = set()
        for i, f in enumerate(free):
            if f < r or f in seen or (allowed and h.models[i] not in allowed):
                continue
            total = h.mem_total[i]
            if total and (total < job.memory_min_mib or h.mem_free[i] < reserve_memory(job, total)):
                continue
            if h.uniform_model is not None:
                seen.add(f)  # on a uniform host two GPUs with the same free milli are interchangeable
            options.append((i,))
        return options

    # -- changing state ------------------------------------------------------------------------

    def place(self, job: JobRequest, policy: Policy, *, explain: bool = True) -> Placement | Unschedulable:
        """Choose a placement for ``job`` with ``policy`` and apply it, or say why it cannot be.

        ``explain=False`` skips the full scan that builds reasons (for simulations).
        """
        choice = policy.choose(self, job)
        if choice is None:
            if not explain:
                return Unschedulable(job.id, ("no host fits now",))
            return explain_job(self, job)
        h, option = choice
        placement = self._placement(h, option, job)
        self.apply(placement)
        return placement

    def _placement(self, h: Host, option: Option, job: JobRequest) -> Placement:
        shares = []
        for i in option:
            total = h.mem_total[i]
            memory = h.mem_free[i] if job.gpu_milli == WHOLE_GPU else reserve_memory(job, total)
            shares.append(GpuShare(h.gpu_ids[i], job.gpu_milli, memory if total else 0))
        return Placement(job.id, h.id, tuple(shares), job.cpu_milli, job.ram_mb)

    def apply(self, placement: Placement) -> None:
        """Take the capacity of ``placement``; raises ValueError if it is not free."""
        h = self._host(placement)
        positions = [h.gpu_ids.index(s.gpu_id) for s in placement.gpus]
        if h.cpu_free < placement.cpu_milli or h.ram_free < placement.ram_mb:
            raise ValueError(f"host {h.name}: not enough CPU or RAM free for {placement.job_id}")
        for i, s in zip(positions, placement.gpus, strict=True):
            if not h.usable[i] or h.free[i] < s.milli or h.mem_free[i] < s.memory_mib:
                raise ValueError(f"GPU {s.gpu_id} on {h.name}: not enough free for {placement.job_id}")
        self._change(h, positions, placement, -1)

    def release(self, placement: Placement) -> None:
        """Give back exactly what ``placement`` took."""
        h = self._host(placement)
        positions = [h.gpu_ids.index(s.gpu_id) for s in placement.gpus]
        for i, s in zip(positions, placement.gpus, strict=True):
            if h.free[i] + s.milli > WHOLE_GPU or h.mem_free[i] + s.memory_mib > h.mem_total[i]:
                raise ValueError(f"GPU {s.gpu_id} on {h.name}: releasing more than was taken")
        if h.cpu_free + placement.cpu_milli > h.cpu_total or h.ram_free + placement.ram_mb > h.ram_total:
            raise ValueError(f"host {h.name}: releasing more CPU or RAM than was taken")
        self._change(h, positions, placement, 1)

    def _host(self, placement: Placement) -> Host:
        h = self._by_id.get(placement.host_id)
        if h is None:
            raise ValueError(f"unknown host {placement.host_id}")
        return h

    def _change(self, h: Host, positions: list[int], placement: Placement, sign: int) -> None:
        gpu_change = bool(positions)
        if gpu_change and h.ready:
            self._index_remove(h)
        h.cpu_free += sign * placement.cpu_milli
        h.ram_free += sign * placement.ram_mb
        for i, s in zip(positions, placement.gpus, strict=True):
            h.free[i] += sign * s.milli
            h.mem_free[i] += sign * s.memory_mib
        h.version += 1
        self.allocated_gpu_milli -= sign * placement.gpu_milli
        if gpu_change and h.ready:
            self._index_add(h)

    def host(self, host_id: str) -> Host:
        return self._by_id[host_id]

    def snapshot(self) -> list[HostState]:
        """The current state as plain HostState values (for tests and hand-over)."""
        from gpufleet.scheduler.model import GpuState

        out = []
        for h in self.hosts:
            gpus = tuple(
                GpuState(
                    gid,
                    h.models[i],
                    h.mem_total[i],
                    h.free[i] if h.usable[i] else h.hidden_free[i],
                    h.mem_free[i],
                    h.gpu_status[i],
                )
                for i, gid in enumerate(h.gpu_ids)
            )
            out.append(HostState(h.id, h.name, h.cpu_total, h.cpu_free, h.ram_total, h.ram_free, gpus, h.status))
        return out


def _candidates_one(index: _ModelIndex, job: JobRequest, seen: set[int], mixed: bool = False) -> Iterator[int]:
    if job.gpu_count == 0:
        # CPU-only work goes first where no GPU is left to strand
        for n in sorted(index.by_full):
            for idx in index.by_full[n]:
                if idx not in seen:
                    seen.add(idx)
                    yield idx
        return
    if job.gpu_milli < WHOLE_GPU:
        keys = index.partial_keys
        r = job.gpu_milli
        # copy: the caller may change the cluster between two candidates only after it stops iterating
        for v in [v for v in keys if v >= r]:
            for idx in index.by_partial[v]:
                if idx not in seen:
                    seen.add(idx)
                    yield idx
        first = 1
    else:
        first = 1 if mixed else job.gpu_count
    for n in sorted(index.by_full):
        if n < first:
            continue
        for idx in index.by_full[n]:
            if idx not in seen:
                seen.add(idx)
                yield idx
