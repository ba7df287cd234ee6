"""Models, versions and files on the wire, in Replicate's shapes (plus gpufleet's own fields)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import Field, model_validator

from gpufleet.domain.models import FileRecord, Hardware, ModelView, VersionRecord
from gpufleet.errors import InvalidInput
from gpufleet.limits import MAX_GPUS
from gpufleet.schemas.common import Page, RequestModel, ResponseModel

T = TypeVar("T")

# The hardware fields a model (HardwareFields) and a deployment (schemas/predictions.py) both take.
WholeGpus = Annotated[int | None, Field(ge=0, le=MAX_GPUS, description="Whole GPUs per replica (0: CPU only).")]
MinMemoryGb = Annotated[float | None, Field(ge=0, le=4096, description="Least GPU memory, GiB.")]
GpuModels = Annotated[list[str] | None, Field(max_length=16, description="Acceptable GPU models.")]
CpuCores = Annotated[float | None, Field(ge=0, le=1024, description="CPU cores per replica.")]
RamGb = Annotated[float | None, Field(ge=0, le=65536, description="Memory per replica, GiB.")]
_HARDWARE_ASKED = ("gpus", "gpu_fraction", "min_memory_gb", "gpu_model", "cpu", "ram_gb")


def hardware_asked(body: RequestModel) -> dict[str, Any]:
    """The body's hardware fields, keyed as ``Hardware.of`` takes them (``None``: not given)."""
    return {f: getattr(body, f) for f in _HARDWARE_ASKED}


class HardwareFields(RequestModel):
    gpus: WholeGpus = None
    gpu_fraction: float | None = Field(
        default=None, gt=0, le=1, description="A share of one GPU per replica (fractional GPUs); excludes `gpus`."
    )
    min_memory_gb: MinMemoryGb = None
    gpu_model: GpuModels = None
    cpu: CpuCores = None
    ram_gb: RamGb = None
    hardware: str | None = Field(
        default=None,
        max_length=100,
        description="Replicate's hardware name, for its client: `cpu` means no GPU; any other name one GPU.",
    )

    def hardware_given(self) -> bool:
        return self.hardware is not None or any(v is not None for v in hardware_asked(self).values())

    def to_hardware(self) -> Hardware:
        asked = hardware_asked(self)
        if asked["gpus"] is None and self.gpu_fraction is None and self.hardware is not None:
            asked["gpus"] = 0 if self.hardware.lower() == "cpu" else 1
        return Hardware.of(**asked)


class ModelCreate(HardwareFields):
    owner: str | None = Field(
        default=None, max_length=100, description="The organization's slug (defaults to the caller's)."
    )
    name: str = Field(min_length=1, max_length=100, description="Lowercase letters, digits, '.', '_' and '-'.")
    description: str = Field(default="", max_length=2000)
    visibility: Literal["private", "public"] = Field(
        default="private", description="Models are private to their organization; `public` is refused."
    )

    @model_validator(mode="after")
    def _private_only(self) -> ModelCreate:
        if self.visibility != "private":
            raise InvalidInput("visibility: models are private to their organization", field="visibility")
        return self


class ModelUpdate(HardwareFields):
    description: str | None = Field(default=None, max_length=2000)


class HardwareRead(ResponseModel):
    gpus: int
    gpu_fraction: float | None = Field(description="Set when a replica takes a share of one GPU.")
    min_memory_gb: float
    gpu_models: list[str]
    cpu: float
    ram_gb: float
    label: str

    @classmethod
    def of(cls, h: Hardware) -> HardwareRead:
        return cls(
            gpus=h.gpu_count,
            gpu_fraction=h.gpu_milli / 1000 if h.gpu_count == 1 and h.gpu_milli < 1000 else None,
            min_memory_gb=h.min_memory_mb / 1024,
            gpu_models=list(h.gpu_models),
            cpu=h.cpu_milli / 1000,
            ram_gb=h.ram_mb / 1024,
            label=h.label(),
        )


class VersionRead(ResponseModel):
    id: str = Field(description="The version's digest: pass it as `version` to create a prediction.")
    created_at: datetime
    cog_version: str
    openapi_schema: dict[str, Any]
    archive_size: int
    predict_ref: str
    python_packages: list[str]
    python_version: str | None
    gpu: bool = Field(description="cog.yaml `build.gpu`.")
    is_generator: bool = Field(description="predict() yields: its output streams.")
    concurrency: int = Field(description="Predictions one replica runs at once (cog.yaml `concurrency.max`).")

    @classmethod
    def of(cls, v: VersionRecord) -> VersionRead:
        return cls(
            id=v.digest,
            created_at=v.created_at,
            cog_version=v.cog_version or "",
            openapi_schema=v.openapi_schema,
            archive_size=v.archive_size,
            predict_ref=v.predict_ref,
            python_packages=v.python_packages,
            python_version=v.python_version,
            gpu=v.gpu,
            is_generator=v.is_generator,
            concurrency=v.concurrency,
        )


class ModelRead(ResponseModel):
    url: str
    owner: str = Field(description="The organization's slug.")
    name: str
    description: str
    visibility: Literal["private"] = "private"
    github_url: None = None
    paper_url: None = None
    license_url: None = None
    run_count: int
    cover_image_url: None = None
    default_example: None = None
    latest_version: VersionRead | None
    hardware: HardwareRead = Field(description="What each replica of the model's own deployment asks for.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ModelView, base_url: str) -> ModelRead:
        m = view.model
        return cls(
            url=f"{base_url}/v1/models/{view.owner}/{m.name}",
            owner=view.owner,
            name=m.name,
            description=m.description,
            run_count=m.run_count,
            latest_version=VersionRead.of(view.latest) if view.latest else None,
            hardware=HardwareRead.of(m.hardware),
            created_at=m.created_at,
            updated_at=m.updated_at,
        )


class CursorPage(ResponseModel, Generic[T]):
    """Replicate's page: `next` is the URL of the following page (null on the last)."""

    next: str | None = None
    previous: str | None = None
    results: list[T]

    @classmethod
    def of(cls, page: Page[T], url: Callable[[str | None], str | None]) -> Self:
        """A page (``Page.of``) in this shape: ``url`` makes the next cursor the next page's URL."""
        return cls(results=page.items, next=url(page.next_cursor))


class FileRead(ResponseModel):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    urls: dict[str, str] = Field(description="`get`: this file's URL, also what a prediction's input takes.")

    @classmethod
    def of(cls, f: FileRecord, base_url: str) -> FileRead:
        return cls(
            id=str(f.id),
            name=f.name,
            content_type=f.content_type,
            size=f.size,
            etag=f'"{f.sha256}"',
            checksums={"sha256": f.sha256},
            metadata=f.metadata,
            created_at=f.created_at,
            expires_at=f.expires_at,
            urls={"get": f"{base_url}/v1/files/{f.id}", "download": f"{base_url}/v1/files/{f.id}/download"},
        )
