"""Jobs: their status, what they ask for (the spec and its GPU requirement), allocations, and pages of them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from gpufleet.errors import InvalidInput
from gpufleet.limits import MAX_GPU_MEMORY_MIB, MAX_GPU_MODELS, MAX_GPUS

WHOLE_GPU_MILLI = 1000  # a share of one GPU is counted in thousandths


class JobStatus(StrEnum):
    PENDING = "pending"
    ALLOCATED = "allocated"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    ALLOCATION_FAILED = "allocation_failed"


def gpu_share_error(count: int, milli: int) -> tuple[str, str] | None:
    """The rule ``count`` GPUs of ``milli`` thousandths each breaks, as (field, message); None if none.

    The one statement of what a job's GPU count and share may be: ``GpuRequirement.validate`` raises
    it as ``InvalidInput`` for submitted jobs, the allocator's ``JobRequest`` as ``ValueError`` for
    requests built from a trace (a model's default hardware states its rules in the API's words,
    ``domain/models.Hardware``). A CPU-only job (count 0) holds milli 0; its default 1000 is allowed.
    """
    if count < 0:
        return "gpu_count", f"must be >= 0, got {count}"
    if count == 0:
        if milli not in (0, WHOLE_GPU_MILLI):
            return "gpu_milli", "a CPU-only job (gpu_count 0) cannot ask for a fraction of a GPU"
    elif not 1 <= milli <= WHOLE_GPU_MILLI:
        return "gpu_milli", f"must be in 1..1000 (1000 is a whole GPU), got {milli}"
    elif milli < WHOLE_GPU_MILLI and count != 1:
        return "gpu_milli", f"a fractional GPU ({milli} of 1000) needs gpu_count 1, got {count}"
    return None


def mib_of_gb(gb: float | None) -> int:
    """MiB in ``gb`` as the API and CLI mean it (1 GB = 1024 MiB); None is 0. The one conversion."""
    return round((gb or 0) * 1024)


def is_fractional(milli: int) -> bool:
    """A share of one GPU below the whole of it (``0`` is no GPU, not a fraction)."""
    return 0 < milli < WHOLE_GPU_MILLI


@dataclass(frozen=True, slots=True)
class GpuRequirement:
    """What a job asks of GPUs, from ``jobs submit`` to the allocator, in one shape.

    ``count`` GPUs on one host, each with ``milli`` thousandths free (below 1000: a fraction of
    one GPU, needs count 1), each with at least ``memory_min_mib`` MiB of memory in all (0: any),
    of one of ``models`` (empty: any). The API takes memory in GB; ``schemas/jobs.py`` converts it
    to MiB once. ``validate`` is the one check of these rules; it names the field as the API's
    ``requirements`` shows it (``gpu_count``, ``gpu_milli``, ``min_memory_mb``, ``gpu_models``).
    """

    count: int = 1
    milli: int = WHOLE_GPU_MILLI
    memory_min_mib: int = 0
    models: tuple[str, ...] = ()

    @property
    def fractional(self) -> bool:
        return is_fractional(self.milli)

    @property
    def total_milli(self) -> int:
        """Thousandths of a GPU held in all (2 whole GPUs: 2000)."""
        return self.count * self.milli

    def validate(self) -> GpuRequirement:
        """This requirement normalised (CPU-only holds milli 0; models trimmed, once each), or InvalidInput."""
        count = whole_number("gpu_count", self.count, 0, MAX_GPUS)
        milli = whole_number("gpu_milli", self.milli, 0, WHOLE_GPU_MILLI)
        broken = gpu_share_error(count, milli)
        if broken is not None:
            raise InvalidInput.at(*broken)
        memory = whole_number("min_memory_mb", self.memory_min_mib, 0, MAX_GPU_MEMORY_MIB)
        models = _models(self.models)
        if count == 0 and (models or memory):
            raise InvalidInput.at("gpu_models" if models else "min_memory_mb", "needs gpu_count of at least 1")
        return GpuRequirement(count, milli if count else 0, memory, models)


def whole_number(field: str, value: Any, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) from ``lo`` to ``hi``, else InvalidInput naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput.at(field, f"must be a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise InvalidInput.at(field, f"must be from {lo} to {hi}, got {value}")
    return value


def _models(models: Any) -> tuple[str, ...]:
    if not isinstance(models, list | tuple):
        raise InvalidInput.at("gpu_models", "must be a list of GPU model names")
    if len(models) > MAX_GPU_MODELS:
        raise InvalidInput.at("gpu_models", f"must have at most {MAX_GPU_MODELS} entries")
    out: list[str] = []
    for i, m in enumerate(models):
        field = f"gpu_models[{i}]"
        if not isinstance(m, str):
            raise InvalidInput.at(field, "must be a string")
        if "\x00" in m:
            raise InvalidInput.at(field, "must not contain NUL characters")
        name = m.strip()
        if not name:
            raise InvalidInput.at(field, "must not be empty")
        if len(m.encode()) > 100:
            raise InvalidInput.at(field, "must be at most 100 bytes")
        if not gpu_type_tokens(name):
            raise InvalidInput.at(field, f"{m!r} does not name a GPU model (e.g. 'A100' or 'H100-80GB')")
        if name not in out:
            out.append(name)
    return tuple(out)


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
    gpu: GpuRequirement = GpuRequirement()
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
    memory_mib: int  # reserved on this GPU (allocations.memory_mb)
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
