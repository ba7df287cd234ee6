"""Jobs: their status, what they ask for (the spec), allocations, and pages of them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class JobStatus(StrEnum):
    PENDING = "pending"
    ALLOCATED = "allocated"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    ALLOCATION_FAILED = "allocation_failed"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a client asks for; validated at the API edge, stored as-is."""

    name: str
    command: list[str] | None = None
    script: str | None = None
    model_type: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    gpu_count: int = 1
    gpu_milli: int = 1000
    min_memory_mb: int = 0
    gpu_models: list[str] = field(default_factory=list)
    cpu_milli: int = 0
    ram_mb: int = 0
    max_runtime_s: int | None = None
    retry_on_host_loss: bool = True
    retry_on_failure: bool = False
    max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class Job:
    id: UUID
    organization_id: UUID
    name: str
    status: JobStatus
    spec: JobSpec
    attempt: int
    host_id: UUID | None
    status_reason: str | None
    pending_reason: str | None
    exit_code: int | None
    submitted_by: UUID | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None = None  # a running job asked to stop (the agent acts on it)
    cost_estimate: Decimal | None = None  # max_runtime_s at the prices of its submission (docs/costs.md)
    kind: str = "job"  # 'replica': a deployment's replica (docs/predictions.md), hidden from job lists


@dataclass(frozen=True, slots=True)
class Allocation:
    id: UUID
    organization_id: UUID
    job_id: UUID
    gpu_id: UUID
    host_id: UUID
    attempt: int
    milli: int
    memory_mb: int
    released_at: datetime | None


def gpu_type_tokens(gpu_type: str) -> list[str]:
    """The tokens a GPU model must contain to match ``gpu_type``; the vendor name is implied.

    "NVIDIA A100" -> ["a100"], which matches "A100-80GB" (tokens a100, 80gb) but not "A10".
    """
    return [t for t in re.split(r"[^a-z0-9]+", gpu_type.lower()) if t and t != "nvidia"]


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job listing; ``next_cursor`` is None on the last page."""

    items: list[Job]
    next_cursor: str | None
