"""The allocator's front door: ``allocate`` one job on a snapshot, and policy lookup by name."""

from __future__ import annotations

from collections.abc import Sequence

from gpufleet.scheduler.cluster import ClusterState
from gpufleet.scheduler.fragmentation import Workload
from gpufleet.scheduler.model import HostState, JobRequest, Placement, Unschedulable
from gpufleet.scheduler.policies import POLICIES, Policy, RandomFit

__all__ = ["POLICIES", "ClusterState", "allocate", "policy_named"]


def policy_named(name: str, workload: Workload | None = None, seed: int = 0) -> Policy:
    """A fresh policy by name; ``workload`` is the target shape distribution for ``fgd``/``default``
    (without one they learn it from the jobs they are asked to place)."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if factory is RandomFit:
        return RandomFit(seed)
    if name in ("fgd", "default"):
        return factory(workload)
    return factory()


def allocate(
    job: JobRequest, hosts: Sequence[HostState], policy: Policy | str = "default"
) -> Placement | Unschedulable:
    """Place ``job`` on a snapshot of ``hosts`` (pure: the snapshot is not changed)."""
    chosen = policy_named(policy) if isinstance(policy, str) else policy
    return ClusterState(hosts).place(job, chosen)
