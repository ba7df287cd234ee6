"""The allocator's front door: ``make_policy`` (the one way to build a placement policy, for the
scheduler, ``gpufleet simulate``, benchmarks and tests) and ``allocate`` one job on a snapshot."""

from __future__ import annotations

from collections.abc import Sequence

from gpufleet.scheduler.cluster import ClusterState
from gpufleet.scheduler.fragmentation import Workload
from gpufleet.scheduler.model import HostState, JobRequest, Placement, Unschedulable
from gpufleet.scheduler.policies import POLICIES, BoundedScan, Policy, RandomFit

__all__ = ["DEFAULT_MAX_CANDIDATES", "DEFAULT_SCAN_LIMIT", "POLICIES", "ClusterState", "allocate", "make_policy"]

# The production bounds (Settings.scheduler_max_candidates / scheduler_scan_limit default to these):
# hosts scored per decision, and the tightest hosts looked at before the whole cluster.
DEFAULT_MAX_CANDIDATES = 64
DEFAULT_SCAN_LIMIT = 32


def make_policy(
    name: str,
    *,
    workload: Workload | None = None,
    seed: int = 0,
    max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
    scan_limit: int | None = DEFAULT_SCAN_LIMIT,
) -> Policy:
    """A fresh placement policy by name, bounded as production runs it unless told otherwise.

    ``workload`` is the target shape distribution for ``fgd``/``default`` (without one they learn
    it from the jobs they are asked to place); ``seed`` drives ``random``. ``None`` for both bounds
    gives the unbounded policy (every candidate scored).
    """
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if factory is RandomFit:
        return RandomFit(seed)
    if name in ("fgd", "default"):
        inner = factory(workload, max_candidates=max_candidates)
    else:
        inner = factory(max_candidates=max_candidates)
    return BoundedScan(inner, scan_limit) if scan_limit is not None else inner


def allocate(
    job: JobRequest, hosts: Sequence[HostState], policy: Policy | str = "default"
) -> Placement | Unschedulable:
    """Place ``job`` on a snapshot of ``hosts`` (pure: the snapshot is not changed)."""
    chosen = make_policy(policy) if isinstance(policy, str) else policy
    return ClusterState(hosts).place(job, chosen)
