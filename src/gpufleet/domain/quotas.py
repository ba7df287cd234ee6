"""Quotas and their usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``max_gpus`` whole-GPU equivalents allocated at once (``gpu_model`` None: all models)."""

    id: UUID
    organization_id: UUID
    gpu_model: str | None
    max_gpus: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    quota: Quota
    used_gpus: float  # allocated milli-GPU / 1000 on the GPUs the quota covers
