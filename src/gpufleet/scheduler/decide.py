"""One organization's scheduling decision: the queue walked in order over a ClusterState. Pure.

Rules (docs/scheduler.md, "The scheduler loop"):

* Jobs are taken in queue order (priority desc, queued_at, id). A job that cannot be placed does
  not block the queue: later jobs that fit are placed now (backfill).
* Anti-starvation: a job that cannot be placed and has waited longer than ``starvation_after_s``
  *reserves* the ready host closest to fitting it: nothing later in the queue is placed there, so
  the host drains until the job fits, while backfill continues on every other host. At most
  ``max_reservations`` hosts per organization are held at once.
* Quotas are checked before placement; a job over quota waits with the quota as its reason.
  Hard budgets likewise ("budget: $493.20 of $500.00 spent ..."); the commit checks them again
  with the budget rows locked (scheduler/commit.py), which is the authoritative check.
* A job no host of the organization could ever hold (even empty, whatever its state) fails,
  unless the organization has no hosts at all yet (a fleet being set up: the job waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from uuid import UUID

from gpufleet.domain.costs import BudgetBook, BudgetState
from gpufleet.domain.jobs import gpu_type_tokens
from gpufleet.domain.quotas import Quota
from gpufleet.scheduler.cluster import ClusterState, Host
from gpufleet.scheduler.model import (
    WHOLE_GPU,
    GpuShare,
    HostState,
    JobRequest,
    Placement,
    Unschedulable,
    reserve_memory,
)
from gpufleet.scheduler.policies import Policy
from gpufleet.scheduler.reasons import explain
from gpufleet.scheduler.types import PendingJob

NO_HOSTS = "no hosts are registered in this organization yet; the job waits for one"
REASON_LIMIT = 2000

ShapeKey = tuple[int, int, int, frozenset[str], int, int]


def _fmt(gpus: float) -> str:
    return f"{round(gpus, 3):g}"


class Inventory:
    """What an organization owns, whatever its current state: for model names and "could it ever"."""

    def __init__(self, hosts: Sequence[HostState]) -> None:
        self.models: frozenset[str] = frozenset(g.model for h in hosts for g in h.gpus)
        self._model_tokens = {m: frozenset(gpu_type_tokens(m)) for m in self.models}
        # hosts repeat: keep one of each kind (CPU, RAM, sorted (model, memory) of its GPUs)
        self._kinds = {
            (h.cpu_milli_total, h.ram_mb_total, tuple(sorted((g.model, g.memory_mib) for g in h.gpus))) for h in hosts
        }
        self.model_of: dict[str, str] = {g.id: g.model for h in hosts for g in h.gpus}
        self._resolved: dict[tuple[str, ...], frozenset[str]] = {}
        self._ever: dict[ShapeKey, bool] = {}

    def resolve(self, requested: tuple[str, ...]) -> frozenset[str]:
        """The inventory's models a job's list names, by tokens ("A100" is "A100-80GB", not "A10").

        When nothing matches, the request's own names are kept: they match no GPU, so the job is
        explained ("no host has a ... GPU") rather than silently allowed on any model.
        """
        if not requested:
            return frozenset()
        found = self._resolved.get(requested)
        if found is None:
            wanted = [frozenset(gpu_type_tokens(r)) for r in requested]
            found = frozenset(m for m, toks in self._model_tokens.items() if any(w <= toks for w in wanted if w))
            if not found:
                found = frozenset(requested)
            self._resolved[requested] = found
        return found

    def matches(self, quota_model: str, model: str) -> bool:
        want = frozenset(gpu_type_tokens(quota_model))
        return bool(want) and want <= self._model_tokens.get(model, frozenset(gpu_type_tokens(model)))

    def could_ever(self, job: JobRequest) -> bool:
        """Some host could hold ``job`` if it were empty and ready (reasons.explain's ``never``)."""
        key = shape_key(job)
        ever = self._ever.get(key)
        if ever is None:
            ever = any(
                cpu >= job.cpu_milli
                and ram >= job.ram_mb
                and sum(
                    1
                    for model, memory in gpus
                    if (not job.gpu_models or model in job.gpu_models) and (memory == 0 or memory >= job.memory_min_mib)
                )
                >= job.gpu_count
                for cpu, ram, gpus in self._kinds
            )
            self._ever[key] = ever
        return ever


def shape_key(job: JobRequest) -> ShapeKey:
    return (job.gpu_count, job.gpu_milli, job.memory_min_mib, job.gpu_models, job.cpu_milli, job.ram_mb)


class QuotaBook:
    """An organization's quotas and what is allocated under each, in milli-GPU."""

    def __init__(self, quotas: Sequence[Quota], usage_by_model: dict[str, int], inventory: Inventory) -> None:
        self._inv = inventory
        self.overall = next((q for q in quotas if q.gpu_model is None), None)
        self.per_model = [q for q in quotas if q.gpu_model is not None]
        self.used: dict[UUID, int] = {}
        self.used_total = sum(usage_by_model.values())
        for q in self.per_model:
            assert q.gpu_model is not None
            self.used[q.id] = sum(v for m, v in usage_by_model.items() if inventory.matches(q.gpu_model, m))
        self._covering: dict[str, list[Quota]] = {}

    def covering(self, model: str) -> list[Quota]:
        found = self._covering.get(model)
        if found is None:
            found = self._covering[model] = [
                q for q in self.per_model if q.gpu_model is not None and self._inv.matches(q.gpu_model, model)
            ]
        return found

    def admit(self, job: JobRequest) -> tuple[str | None, frozenset[str] | None]:
        """(reason the job must wait, None) or (None, the models it may use; None: no restriction)."""
        need = job.gpu_count * job.gpu_milli
        if not need or (self.overall is None and not self.per_model):
            return None, None
        if self.overall is not None and self.used_total + need > self.overall.max_gpus * WHOLE_GPU:
            return self._reason(self.overall, self.used_total, need), None
        if not self.per_model:
            return None, None
        candidates = job.gpu_models or self._inv.models
        allowed: list[str] = []
        first_block: tuple[Quota, int] | None = None
        for model in sorted(candidates):
            blocked = next((q for q in self.covering(model) if self.used[q.id] + need > q.max_gpus * WHOLE_GPU), None)
            if blocked is None:
                allowed.append(model)
            elif first_block is None:
                first_block = (blocked, self.used[blocked.id])
        if not allowed:
            assert first_block is not None
            return self._reason(first_block[0], first_block[1], need), None
        if len(allowed) == len(candidates):
            return None, None
        return None, frozenset(allowed)

    def charge(self, placement: Placement) -> None:
        for share in placement.gpus:
            self.used_total += share.milli
            for q in self.covering(self._inv.model_of.get(share.gpu_id, "")):
                self.used[q.id] += share.milli

    @staticmethod
    def _reason(q: Quota, used: int, need: int) -> str:
        what = f"{q.gpu_model} GPUs" if q.gpu_model else "GPUs"
        text = f"quota: {_fmt(used / WHOLE_GPU)} of {q.max_gpus} {what} in use"
        if used < q.max_gpus * WHOLE_GPU:
            text += f", this job needs {_fmt(need / WHOLE_GPU)}"
        return text


def request_of(job: PendingJob, inventory: Inventory) -> JobRequest:
    """The allocator's request for a queued job: its ``GpuRequirement`` flattened, the one place."""
    gpu = job.gpu
    return JobRequest(
        id=str(job.id),
        gpu_count=gpu.count,
        gpu_milli=gpu.milli if gpu.count else 0,
        memory_min_mib=gpu.memory_min_mib,
        gpu_models=inventory.resolve(gpu.models),
        cpu_milli=job.cpu_milli,
        ram_mb=job.ram_mb,
        priority=job.priority,
    )


@dataclass
class OrgDecision:
    placements: list[tuple[PendingJob, Placement]] = field(default_factory=list)
    reasons: dict[UUID, str] = field(default_factory=dict)  # still pending -> why
    failed: list[tuple[PendingJob, str]] = field(default_factory=list)  # -> allocation_failed
    reserved: dict[str, UUID] = field(default_factory=dict)  # host id -> the starving job it is held for
    decision_ns: list[int] = field(default_factory=list)


def _join(reasons: Iterable[str]) -> str:
    text = "; ".join(reasons)
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def decide_org(
    hosts: Sequence[HostState],
    queue: Sequence[PendingJob],
    *,
    policy: Policy,
    quotas: Sequence[Quota] = (),
    usage_by_model: dict[str, int] | None = None,
    budgets: Sequence[BudgetState] = (),
    starvation_after_s: float = 300.0,
    max_reservations: int = 4,
    on_placement: Callable[[PendingJob, Placement], None] | None = None,
) -> OrgDecision:
    """Place ``queue`` (already in order) on ``hosts``; say why the others wait or fail.

    ``on_placement`` sees each placement as soon as it is decided (the caller commits in
    batches while the rest of the queue is still being decided).
    """
    out = OrgDecision()
    if not hosts:
        for job in queue:
            out.reasons[job.id] = NO_HOSTS
        return out
    cluster = ClusterState(hosts)
    inventory = Inventory(hosts)
    book = QuotaBook(quotas, usage_by_model or {}, inventory)
    money = BudgetBook(budgets)
    failed_shapes: dict[ShapeKey, Unschedulable] = {}
    never_reasons: dict[ShapeKey, str] = {}
    clock = time.perf_counter_ns
    for job in queue:
        req = request_of(job, inventory)
        key = shape_key(req)
        if not inventory.could_ever(req):
            why = never_reasons.get(key)
            if why is None:
                why = never_reasons[key] = _join(explain(cluster, req).reasons)
            out.failed.append((job, why))
            continue
        blocked, allowed = book.admit(req)
        if blocked is None:
            blocked = money.admit(job.submitted_by, job.labels, job.cost_estimate)
        if blocked is not None:
            out.reasons[job.id] = blocked
            continue
        if allowed is not None:
            req = replace(req, gpu_models=allowed)
            key = shape_key(req)
        result = failed_shapes.get(key)
        if result is None:
            t0 = clock()
            decided = cluster.place(req, policy)
            out.decision_ns.append(clock() - t0)
            if isinstance(decided, Placement):
                book.charge(decided)
                money.charge(job.submitted_by, job.labels, job.cost_estimate)
                out.placements.append((job, decided))
                if on_placement is not None:
                    on_placement(job, decided)
                continue
            # capacity only shrinks during a decision, so this shape fails for the rest of it
            result = failed_shapes[key] = decided
        reasons = list(result.reasons)
        if job.waited_s >= starvation_after_s and len(out.reserved) < max_reservations:
            held = _reserve(cluster, req, set(out.reserved))
            if held is not None:
                out.reserved[held.id] = job.id
                reasons.insert(
                    0,
                    f"waited over {starvation_after_s:g}s: host {held.name} is held for this job "
                    "and takes no other work until it fits",
                )
        elif out.reserved:
            reasons.append(f"{len(out.reserved)} host(s) held for jobs waiting longer than {starvation_after_s:g}s")
        out.reasons[job.id] = _join(reasons)
    return out


def _closeness(h: Host, job: JobRequest) -> float | None:
    """How near ``h`` is to fitting ``job`` now (higher is nearer), None if it never could."""
    suitable = [
        i
        for i in range(len(h.gpu_ids))
        if h.usable[i]
        and (not job.gpu_models or h.models[i] in job.gpu_models)
        and (h.mem_total[i] == 0 or h.mem_total[i] >= job.memory_min_mib)
    ]
    if len(suitable) < job.gpu_count or h.cpu_total < job.cpu_milli or h.ram_total < job.ram_mb:
        return None
    fit = 0
    for i in suitable:
        total = h.mem_total[i]
        memory_ok = not total or job.gpu_milli == WHOLE_GPU or h.mem_free[i] >= reserve_memory(job, total)
        if h.free[i] >= job.gpu_milli and memory_ok:
            fit += 1
    score = min(fit, job.gpu_count) / job.gpu_count if job.gpu_count else 1.0
    score += min(h.cpu_free / job.cpu_milli, 1.0) if job.cpu_milli else 1.0
    score += min(h.ram_free / job.ram_mb, 1.0) if job.ram_mb else 1.0
    return score


def _reserve(cluster: ClusterState, job: JobRequest, taken: set[str]) -> Host | None:
    """Hold the ready host closest to fitting ``job``: take all its free capacity off the cluster.

    Ties go to the smallest host id, so the same host stays held from cycle to cycle; its free
    capacity only grows while held, so the job gets nearer every time work there finishes.
    """
    best: tuple[float, str] | None = None
    chosen: Host | None = None
    for h in cluster.hosts:
        if not h.ready or h.id in taken:
            continue
        score = _closeness(h, job)
        if score is None:
            continue
        rank = (-score, h.id)
        if best is None or rank < best:
            best, chosen = rank, h
    if chosen is None:
        return None
    shares = tuple(
        GpuShare(gid, chosen.free[i], chosen.mem_free[i])
        for i, gid in enumerate(chosen.gpu_ids)
        if chosen.usable[i] and (chosen.free[i] or chosen.mem_free[i])
    )
    cluster.apply(Placement(f"held-for:{job.id}", chosen.id, shares, chosen.cpu_free, chosen.ram_free))
    return chosen
