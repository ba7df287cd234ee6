"""Models, their versions and hardware (the inference half)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.domain.jobs import GpuRequirement, mib_of_gb
from gpufleet.errors import InvalidInput
from gpufleet.limits import MAX_GPUS

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


MAX_DESCRIPTION = 2000


def concurrency_of(cog_config: Mapping[str, Any]) -> int:
    """``concurrency.max`` of a cog.yaml (1 when absent): predictions one replica runs at once."""
    conc = cog_config.get("concurrency")
    value = conc.get("max", 1) if isinstance(conc, dict) else 1
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def check_name(name: str, field: str = "name") -> str:
    """A model (or deployment) name: lowercase letters, digits, '.', '_' and '-', up to 100."""
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"{field}: {name!r} is not a valid name: use lowercase letters, digits, '.', '_' and '-' "
            "(up to 100, starting with a letter or digit)",
            field=field,
        )
    return name


def split_ref(ref: str) -> tuple[str, str]:
    """``owner/name`` -> (owner, name); InvalidInput otherwise."""
    owner, sep, name = ref.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise InvalidInput(f"{ref!r}: expected OWNER/NAME, e.g. my-org/echo")
    return owner, name


@dataclass(frozen=True, slots=True)
class Hardware:
    """What each replica of the model asks the scheduler for (the model's default deployment)."""

    gpu_count: int = 1
    gpu_milli: int = 1000  # thousandths of one GPU when gpu_count is 1 (fractional GPUs)
    min_memory_mb: int = 0
    gpu_models: tuple[str, ...] = ()
    cpu_milli: int = 0
    ram_mb: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.gpu_count <= MAX_GPUS:
            raise InvalidInput(f"gpus: from 0 to {MAX_GPUS}", field="gpus")
        if not 0 <= self.gpu_milli <= 1000:
            raise InvalidInput("gpu_fraction: from 0 to 1", field="gpu_fraction")
        if self.gpu_milli != 1000 and self.gpu_count != 1 and not (self.gpu_count == 0 and self.gpu_milli == 0):
            raise InvalidInput("gpu_fraction: a fraction of a GPU needs gpus = 1", field="gpu_fraction")
        if self.gpu_count == 0 and self.gpu_milli != 0:
            raise InvalidInput("gpu_fraction: no GPU asked, so no fraction either", field="gpu_fraction")
        if self.gpu_count > 0 and self.gpu_milli == 0:
            raise InvalidInput("gpu_fraction: must be above 0 when a GPU is asked", field="gpu_fraction")
        if self.min_memory_mb < 0 or self.cpu_milli < 0 or self.ram_mb < 0:
            raise InvalidInput("hardware: amounts cannot be negative", field="hardware")

    @classmethod
    def of(
        cls,
        *,
        gpus: int | None = None,
        gpu_fraction: float | None = None,
        min_memory_gb: float | None = None,
        gpu_model: str | list[str] | None = None,
        cpu: float | None = None,
        ram_gb: float | None = None,
    ) -> Hardware:
        """From user-facing units (a fraction, GiB); ``gpus`` and ``gpu_fraction`` exclude each other."""
        if gpus is not None and gpu_fraction is not None:
            raise InvalidInput("give gpus or gpu_fraction, not both", field="gpu_fraction")
        if gpu_fraction is not None:
            if not 0 < gpu_fraction <= 1:
                raise InvalidInput("gpu_fraction: above 0 and at most 1", field="gpu_fraction")
            count, milli = 1, round(gpu_fraction * 1000)
        else:
            count = 1 if gpus is None else gpus
            milli = 1000 if count > 0 else 0
        models = [gpu_model] if isinstance(gpu_model, str) else list(gpu_model or [])
        return cls(
            gpu_count=count,
            gpu_milli=milli,
            min_memory_mb=mib_of_gb(min_memory_gb),
            gpu_models=tuple(m for m in models if m),
            cpu_milli=round((cpu or 0) * 1000),
            ram_mb=mib_of_gb(ram_gb),
        )

    @property
    def gpu(self) -> GpuRequirement:
        """What each replica's job asks of GPUs."""
        return GpuRequirement(self.gpu_count, self.gpu_milli, self.min_memory_mb, self.gpu_models)

    def label(self) -> str:
        """A short description, e.g. ``1x GPU``, ``0.25 GPU``, ``CPU``, ``2x A100 >=40 GiB``."""
        if self.gpu_count == 0:
            return "CPU"
        kind = "/".join(self.gpu_models) or "GPU"
        text = f"{self.gpu_milli / 1000:g} {kind}" if self.gpu_milli < 1000 else f"{self.gpu_count}x {kind}"
        if self.min_memory_mb:
            text += f" >={self.min_memory_mb / 1024:g} GiB"
        return text


@dataclass(frozen=True, slots=True)
class ModelRecord:
    id: UUID
    organization_id: UUID
    name: str
    description: str
    hardware: Hardware
    latest_version_id: UUID | None
    run_count: int
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version's facts as its archive states them (``inference/cog_schema.derive``): what a
    stored version keeps of its cog.yaml and predict.py."""

    predict_ref: str
    cog_config: dict[str, Any]
    openapi_schema: dict[str, Any]
    python_packages: list[str]
    python_version: str | None
    gpu: bool
    is_generator: bool
    cog_version: str | None

    @property
    def concurrency(self) -> int:
        """Predictions one replica of this version runs at once (cog.yaml ``concurrency.max``)."""
        return concurrency_of(self.cog_config)


@dataclass(frozen=True, slots=True)
class VersionRecord(VersionInfo):
    """A pushed version: its archive's facts and where it belongs; the archive itself is read
    apart (``repo.models.get_archive``)."""

    id: UUID
    organization_id: UUID
    model_id: UUID
    model_name: str
    digest: str  # the API's version id
    archive_size: int
    created_by: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ModelView:
    """A model as the API shows it: its owner's slug and its latest version."""

    owner: str
    model: ModelRecord
    latest: VersionRecord | None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file (an input, or an output the agent stored); its bytes are read apart."""

    id: UUID
    organization_id: UUID
    name: str
    content_type: str
    size: int
    sha256: str
    metadata: dict[str, Any]
    prediction_id: UUID | None
    created_by: UUID | None
    expires_at: datetime
    created_at: datetime
