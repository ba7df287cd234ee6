"""Value types of the scheduling side below HTTP: quotas, job pages, the queue and cycle results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from gpufleet.domain.costs import BudgetState
from gpufleet.domain.jobs import GpuRequirement
from gpufleet.domain.quotas import Quota
from gpufleet.scheduler.model import HostState


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A pending job as the scheduler sees it: what it asks for and how long it has waited."""

    id: UUID
    organization_id: UUID
    attempt: int
    priority: int
    waited_s: float  # by the database clock
    gpu: GpuRequirement  # as submitted (validated then)
    cpu_milli: int
    ram_mb: int
    pending_reason: str | None
    # for budgets: whose work it is, its labels, and its expected cost (None: unbounded)
    submitted_by: UUID | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cost_estimate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Everything one scheduling cycle decides on, read in one transaction on the system path.

    ``hosts`` holds every non-revoked host of each organization, ready or not (a host that is
    draining still counts for "could this job ever run here"). ``gpu_usage`` is allocated
    milli-GPU per (organization, GPU model), for quotas; only organizations with quotas appear.
    """

    hosts: dict[UUID, list[HostState]]
    pending: list[PendingJob]
    quotas: dict[UUID, list[Quota]]
    gpu_usage: dict[UUID, dict[str, int]]
    budgets: dict[UUID, list[BudgetState]] = field(default_factory=dict)  # hard budgets only


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What one batch commit did: placed jobs, lost races (left pending) and vanished jobs."""

    placed: list[UUID] = field(default_factory=list)
    conflicts: list[UUID] = field(default_factory=list)
    gone: list[UUID] = field(default_factory=list)  # no longer pending (cancelled meanwhile)
    aborted: bool = False  # the database refused the whole batch; nothing of it was written


@dataclass(frozen=True, slots=True)
class CycleResult:
    """The outcome of one ``Scheduler.run_once``."""

    placed: int = 0
    conflicts: int = 0
    allocation_failed: int = 0
    still_pending: int = 0
    reasons_written: int = 0
    passes: int = 0
    snapshot_s: float = 0.0
    decide_s: float = 0.0
    commit_s: float = 0.0
    duration_s: float = 0.0
    placed_job_ids: tuple[UUID, ...] = ()
