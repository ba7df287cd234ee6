"""Why a job cannot be placed: specific, human-readable reasons built by one scan of the cluster.

This is the slow path (every host is looked at); it runs only when no placement was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpufleet.scheduler.model import WHOLE_GPU, JobRequest, Unschedulable, reserve_memory

if TYPE_CHECKING:
    from gpufleet.scheduler.cluster import ClusterState, Host

PER_HOST_LIMIT = 5  # up to this many hosts, each gets its own line


def _cores(milli: int) -> str:
    return f"{milli / 1000:g}"


def _gpu_share(milli: int) -> str:
    """A share of one GPU as people say it: "0.25 GPU"."""
    return f"{milli / 1000:g} GPU"


def _gpu_words(job: JobRequest) -> str:
    models = "/".join(sorted(job.gpu_models))
    return f"{models} GPU" if models else "GPU"


@dataclass
class _Scan:
    model_seen: bool = False
    memory_seen: bool = False
    largest_memory: tuple[int, str] = (0, "")
    could_ever: bool = False
    gpu_fit_hosts: int = 0
    best_count: int = 0
    hosts_with_best: int = 0
    best_milli: tuple[int, str] = (0, "")
    cpu_best: int = -1
    ram_best: int = -1
    unavailable: list[str] = field(default_factory=list)
    per_host: list[str] = field(default_factory=list)


HostKind = tuple[tuple[str, ...], tuple[int, ...], tuple[bool, ...]]  # models, memory, usable of its GPUs


@dataclass
class StaticFit:
    model_seen: bool = False
    memory_seen: bool = False
    largest_memory: tuple[int, str] = (0, "")
    per_host: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # suitable, usable


def _gpu_ok(h: Host, i: int, job: JobRequest) -> bool:
    """The GPU's model and total memory suit the job (ignoring what is free now)."""
    if job.gpu_models and h.models[i] not in job.gpu_models:
        return False
    return h.mem_total[i] == 0 or h.mem_total[i] >= job.memory_min_mib


def _suitable(cluster: ClusterState, job: JobRequest) -> StaticFit:
    """What does not change while a cycle decides: which GPUs suit the job's models and memory.

    A full fleet explains a dozen shapes per organization per cycle; the model and memory
    checks are the same for every shape asking for the same models and memory, so they are
    done once per ClusterState (capacity changes, the GPUs' models, memory and status do not).
    """
    key = (job.gpu_models, job.memory_min_mib)
    found = cluster.explain_cache.get(key)
    if found is not None:
        return found
    kinds = cluster.host_kinds
    if kinds is None:  # hosts repeat: the same models, memory and usable GPUs are looked at once
        kinds = cluster.host_kinds = [(tuple(h.models), tuple(h.mem_total), tuple(h.usable)) for h in cluster.hosts]
    found = StaticFit()
    by_kind: dict[HostKind, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for h, kind in zip(cluster.hosts, kinds, strict=True):
        fit = by_kind.get(kind)
        if fit is None:
            suitable = tuple(i for i in range(len(h.gpu_ids)) if _gpu_ok(h, i, job))
            fit = by_kind[kind] = (suitable, tuple(i for i in suitable if h.usable[i]))
            for i in range(len(h.gpu_ids)):
                if not job.gpu_models or h.models[i] in job.gpu_models:
                    found.model_seen = True
                    if h.mem_total[i] >= job.memory_min_mib or h.mem_total[i] == 0:
                        found.memory_seen = True
                    found.largest_memory = max(found.largest_memory, (h.mem_total[i], h.models[i]))
        found.per_host.append(fit)
    cluster.explain_cache[key] = found
    return found


def explain(cluster: ClusterState, job: JobRequest) -> Unschedulable:
    static = _suitable(cluster, job)
    scan = _Scan(model_seen=static.model_seen, memory_seen=static.memory_seen, largest_memory=static.largest_memory)
    # one line per host is read only on a small cluster: a large one is not worded host by host
    detail = len(cluster.hosts) <= PER_HOST_LIMIT
    k = job.gpu_count
    milli = job.gpu_milli
    whole = milli == WHOLE_GPU
    fractional = job.fractional
    for h, (suitable, usable) in zip(cluster.hosts, static.per_host, strict=True):
        ever = len(suitable) >= k and h.cpu_total >= job.cpu_milli and h.ram_total >= job.ram_mb
        scan.could_ever |= ever
        if not h.ready:
            if ever:
                scan.unavailable.append(f"{h.name} is {h.status}")
            if detail:
                scan.per_host.append(f"{h.name}: {h.status}")
            continue
        broken = len(suitable) - len(usable)
        if ever and broken and len(usable) < k:
            scan.unavailable.append(f"{broken} suitable GPU(s) on {h.name} are unavailable")
        free = h.free
        free_now = 0
        for i in usable:
            if free[i] >= milli:
                total = h.mem_total[i]
                if not total or whole or h.mem_free[i] >= reserve_memory(job, total):
                    free_now += 1
        if k and free_now < k:
            if detail:
                scan.per_host.append(_host_gpu_line(h, job, list(suitable)))
            if free_now > scan.best_count:
                scan.best_count, scan.hosts_with_best = free_now, 0
            if free_now == scan.best_count:
                scan.hosts_with_best += 1
            if fractional:  # only a fractional job's reason names the most free share
                most = max((free[i] for i in usable), default=0)
                if (most, h.name) > scan.best_milli:
                    scan.best_milli = (most, h.name)
            continue
        scan.gpu_fit_hosts += 1
        scan.cpu_best = max(scan.cpu_best, h.cpu_free)
        if h.cpu_free < job.cpu_milli:
            if detail:
                scan.per_host.append(f"{h.name}: {_cores(h.cpu_free)} of {_cores(job.cpu_milli)} CPU cores free")
            continue
        scan.ram_best = max(scan.ram_best, h.ram_free)
        if h.ram_free < job.ram_mb:
            if detail:
                scan.per_host.append(f"{h.name}: {h.ram_free} of {job.ram_mb} MiB RAM free")
            continue
        if detail:
            scan.per_host.append(f"{h.name}: fits (the cluster changed while deciding)")
    return Unschedulable(job.id, _reasons(cluster, job, scan), never=not scan.could_ever)


def _host_gpu_line(h: Host, job: JobRequest, suitable: list[int]) -> str:
    words = _gpu_words(job)
    if not suitable:
        if job.gpu_models and not any(m in job.gpu_models for m in h.models):
            have = ", ".join(sorted(set(h.models))) or "none"
            return f"{h.name}: no {words} (has {have})"
        if job.gpu_models or h.models:
            return f"{h.name}: no {words} with {job.memory_min_mib} MiB memory"
        return f"{h.name}: no GPU"
    if job.fractional:
        most = max((h.free[i] for i in suitable if h.usable[i]), default=0)
        return f"{h.name}: no {words} with {_gpu_share(job.gpu_milli)} free (most free: {_gpu_share(most)})"
    if len(suitable) < job.gpu_count:  # never, even if empty: say the host's size, not what is free now
        total = len(h.gpu_ids)
        some = f"{len(suitable)} {words}{'' if len(suitable) == 1 else 's'}"
        some += "" if total == len(suitable) else f" (of {total})"
        return f"{h.name}: has {some}, the job needs {job.gpu_count}"
    # "1 of 2 GPUs free" would read as the host's size; say what is free and what the job needs.
    free = sum(1 for i in suitable if h.usable[i] and h.free[i] == WHOLE_GPU)
    return f"{h.name}: {free} {words}{'' if free == 1 else 's'} free, the job needs {job.gpu_count}"


def _reasons(cluster: ClusterState, job: JobRequest, scan: _Scan) -> tuple[str, ...]:
    words = _gpu_words(job)
    k = job.gpu_count
    out: list[str] = []
    if not cluster.hosts:
        return ("the cluster has no hosts",)
    if k and not scan.model_seen:
        have = ", ".join(cluster.models) or "none"
        out.append(f"no host has a {words} (models here: {have})")
    elif k and not scan.memory_seen:
        memory, model = scan.largest_memory
        out.append(f"no host has a {words} with {job.memory_min_mib} MiB memory (largest: {memory} MiB {model})")
    elif not scan.could_ever:
        # Name only what the job asked for: "8 GPUs", not "8 GPU(s) with 0 CPU cores and 0 MiB RAM".
        needs = [f"{k} {words}" + ("s" if k != 1 else "")] if k else []
        needs += [f"{_cores(job.cpu_milli)} CPU cores"] if job.cpu_milli else []
        needs += [f"{job.ram_mb} MiB RAM"] if job.ram_mb else []
        out.append(f"no host could ever hold {' and '.join(needs) or 'the job'}, even if empty")
    if len(cluster.hosts) <= PER_HOST_LIMIT:
        return tuple(out + scan.per_host)
    if k and scan.gpu_fit_hosts == 0 and scan.model_seen and scan.memory_seen:
        if job.fractional:
            most, name = scan.best_milli
            out.append(
                f"no ready host has a {words} with {_gpu_share(job.gpu_milli)} free "
                f"(most free: {_gpu_share(most)} on {name})"
            )
        else:
            out.append(f"no ready host has {k} free {words}s; {scan.hosts_with_best} hosts have {scan.best_count}")
    elif scan.gpu_fit_hosts and scan.cpu_best < job.cpu_milli:
        out.append(
            f"needs {_cores(job.cpu_milli)} CPU cores free; most free on a fitting host: {_cores(scan.cpu_best)}"
        )
    elif scan.gpu_fit_hosts and scan.ram_best < job.ram_mb:
        out.append(f"needs {job.ram_mb} MiB RAM free; most free on a fitting host: {scan.ram_best}")
    out.extend(scan.unavailable[:3])
    if len(scan.unavailable) > 3:
        out.append(f"and {len(scan.unavailable) - 3} more unavailable hosts or GPUs")
    return tuple(out) or ("no host fits now",)
