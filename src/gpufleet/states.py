"""The allowed-transition tables: one per entity. Terminal states have no entry.

The database guards them again: every status change is ``UPDATE ... WHERE status = ANY(allowed)``
(see ``repo.jobs.transition``), so a racing writer cannot slip an illegal move through.
A prediction's few moves are guarded by the SQL of ``repo/predictions.py`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from gpufleet.domain.hosts import GpuStatus, HostStatus
from gpufleet.domain.jobs import JobStatus
from gpufleet.errors import InvalidTransition

J = JobStatus
JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    J.PENDING: frozenset({J.ALLOCATED, J.CANCELLED, J.ALLOCATION_FAILED}),
    J.ALLOCATED: frozenset({J.RUNNING, J.PENDING, J.CANCELLED, J.FAILED}),
    J.RUNNING: frozenset({J.SUCCEEDED, J.FAILED, J.CANCELLED, J.TIMED_OUT, J.PENDING}),
}
JOB_TERMINAL = frozenset(s for s in JobStatus if s not in JOB_TRANSITIONS)

H = HostStatus
HOST_TRANSITIONS: Mapping[HostStatus, frozenset[HostStatus]] = {
    H.READY: frozenset({H.UNREACHABLE, H.DRAINING, H.MAINTENANCE}),
    H.UNREACHABLE: frozenset({H.READY, H.DRAINING, H.MAINTENANCE}),
    H.DRAINING: frozenset({H.READY, H.UNREACHABLE, H.MAINTENANCE}),
    H.MAINTENANCE: frozenset({H.READY, H.DRAINING, H.UNREACHABLE}),
}

G = GpuStatus
GPU_TRANSITIONS: Mapping[GpuStatus, frozenset[GpuStatus]] = {
    G.AVAILABLE: frozenset({G.ALLOCATED, G.UNHEALTHY, G.OFFLINE, G.MAINTENANCE}),
    G.ALLOCATED: frozenset({G.AVAILABLE, G.UNHEALTHY, G.OFFLINE, G.MAINTENANCE}),
    # Back to service with allocations still held (a job outlived the outage): allocated.
    G.UNHEALTHY: frozenset({G.AVAILABLE, G.OFFLINE, G.MAINTENANCE, G.ALLOCATED}),
    G.OFFLINE: frozenset({G.AVAILABLE, G.UNHEALTHY, G.MAINTENANCE, G.ALLOCATED}),
    G.MAINTENANCE: frozenset({G.AVAILABLE, G.OFFLINE, G.UNHEALTHY, G.ALLOCATED}),
}

S = TypeVar("S", bound=StrEnum)


def sources(table: Mapping[S, frozenset[S]], target: S) -> list[S]:
    """Every state from which ``target`` may be reached: the guard of the SQL update."""
    return [src for src, targets in table.items() if target in targets]


def check(table: Mapping[S, frozenset[S]], current: S, target: S, *, entity: str = "job") -> None:
    if target not in table.get(current, frozenset()):
        raise InvalidTransition(f"a {entity} cannot go from {current} to {target}")
