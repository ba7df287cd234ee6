"""Jobs, their events and quotas on the wire (shared by the server, the SDK and the CLI).

``JobCreate`` takes requirements in the units people think in (GB, cores, "2h") and turns them
into a ``JobSpec`` in the units the scheduler counts (MiB, milli-CPU, seconds): this is the one
place GB become MiB (``mib_of_gb``), and the GPU part becomes the ``GpuRequirement`` that the
service validates, the jobs table stores and the scheduler reads back. It also takes
the architecture sketch's shape as written: ``gpu_requirements: {min_memory (GB), gpu_type}``.
Rules that involve several fields are the service's (``services/job_spec.py``); its errors are
renamed here to the wire's field names, so a 422 always names what the client sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from gpufleet import states
from gpufleet.domain.events import Event
from gpufleet.domain.jobs import WHOLE_GPU_MILLI, Allocation, GpuRequirement, Job, JobSpec, JobStatus, mib_of_gb
from gpufleet.errors import InvalidInput
from gpufleet.limits import (
    MAX_ATTEMPTS,
    MAX_COMMAND_ARGS,
    MAX_ENV,
    MAX_GPU_MODELS,
    MAX_GPUS,
    MAX_JOB_NAME,
    MAX_LABELS,
    MAX_PATH,
    MAX_PRIORITY,
    MAX_QUOTA_GPUS,
    MAX_RUNTIME_S,
    MAX_SCRIPT_BYTES,
)
from gpufleet.schemas.common import Page, RequestModel, ResponseModel

# RequestModel already refuses text PostgreSQL cannot store (NUL, lone surrogates), anywhere.
Text = str  # kept exactly: argv, scripts, env values
Trimmed = Annotated[str, AfterValidator(str.strip)]  # names and the like

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str | int) -> int:
    """Seconds in ``value``: a whole number of seconds, or units like "2h", "30m", "1h30m", "1d"."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        text = str(value).strip().lower()
        m = _DURATION.match(text)
        if text.isdigit():
            seconds = int(text)
        elif text and m:
            d, h, mi, s = (int(g or 0) for g in m.groups())
            seconds = ((d * 24 + h) * 60 + mi) * 60 + s
        else:
            raise ValueError(f"{value!r} is not a duration: use seconds or units like '2h', '30m', '1h30m'")
    if not 1 <= seconds <= MAX_RUNTIME_S:
        raise ValueError(f"must be from 1 second to {MAX_RUNTIME_S // 86400} days")
    return seconds


class Strict(RequestModel):
    """JSON types are taken as they are: "5" is not a number and 1 is not ``true``.

    Whitespace is significant in a command's arguments, a script and env values, so only the
    ``Trimmed`` fields are stripped (unlike other request bodies, which strip every string).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)


class RetryPolicy(Strict):
    on_host_loss: bool = Field(default=True, description="Queue the job again when its host is lost.")
    on_failure: bool = Field(default=False, description="Queue the job again when it exits non-zero.")
    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS, description="Attempts in all, the first included.")


class GpuRequirements(Strict):
    """The architecture sketch's requirement shape, accepted as written."""

    min_memory: float | None = Field(
        default=None, ge=0, le=4096, allow_inf_nan=False, description="GB of memory per GPU."
    )
    gpu_type: Trimmed | None = Field(
        default=None, min_length=1, max_length=100, description="A GPU model, e.g. 'NVIDIA A100'."
    )


class JobCreate(Strict):
    """A job to queue. Give exactly one of ``command`` (an argv list) or ``script`` (a shell script)."""

    name: Trimmed = Field(min_length=1, max_length=MAX_JOB_NAME)
    command: list[Text] | None = Field(
        default=None, min_length=1, max_length=MAX_COMMAND_ARGS, description="argv, no shell."
    )
    script: Text | None = Field(default=None, min_length=1, max_length=MAX_SCRIPT_BYTES, description="Run by /bin/sh.")
    env: dict[Text, Text] = Field(
        default_factory=dict, max_length=MAX_ENV, description="Returned as given: no secrets."
    )
    working_dir: Trimmed | None = Field(default=None, min_length=1, max_length=MAX_PATH)
    labels: dict[Trimmed, Trimmed] = Field(default_factory=dict, max_length=MAX_LABELS)
    model_type: Trimmed | None = Field(default=None, min_length=1, max_length=100)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first.")
    max_runtime_s: int | None = Field(default=None, ge=1, le=MAX_RUNTIME_S)
    max_runtime: Annotated[int, Field(ge=1, le=MAX_RUNTIME_S)] | Annotated[str, Field(max_length=32)] | None = Field(
        default=None, description="Like max_runtime_s, also as '2h', '30m', '1h30m' or '1d'."
    )
    retry: RetryPolicy | None = None
    gpu_count: int = Field(default=1, ge=0, le=MAX_GPUS, description="Whole GPUs on one host; 0 for CPU only.")
    gpu_milli: int | None = Field(
        default=None, ge=1, le=1000, description="A fraction of one GPU in thousandths (needs gpu_count 1)."
    )
    min_memory_gb: float | None = Field(
        default=None, ge=0, le=4096, allow_inf_nan=False, description="GPU memory per GPU, GB."
    )
    gpu_models: list[Annotated[Trimmed, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=MAX_GPU_MODELS, description="Any of these models, e.g. ['A100', 'H100-80GB']."
    )
    cpu_cores: float | None = Field(default=None, ge=0, le=4096, allow_inf_nan=False)
    ram_gb: float | None = Field(default=None, ge=0, le=65536, allow_inf_nan=False)
    gpu_requirements: GpuRequirements | None = Field(
        default=None, description="The sketch's shape; an alternative to min_memory_gb and gpu_models."
    )

    @field_validator("max_runtime")
    @classmethod
    def _duration(cls, v: str | int | None) -> int | None:
        return None if v is None else parse_duration(v)

    def to_spec(self) -> JobSpec:
        req = self.gpu_requirements or GpuRequirements()
        models = list(self.gpu_models)
        if req.gpu_type is not None:
            if models:
                raise InvalidInput.at(
                    "gpu_requirements.gpu_type", "give gpu_models or gpu_requirements.gpu_type, not both"
                )
            models = [req.gpu_type]
        memory_gb = self.min_memory_gb
        if req.min_memory is not None:
            if memory_gb is not None:
                raise InvalidInput.at(
                    "gpu_requirements.min_memory", "give min_memory_gb or gpu_requirements.min_memory, not both"
                )
            memory_gb = req.min_memory
        runtime = self.max_runtime_s
        if self.max_runtime is not None:
            if runtime is not None:
                raise InvalidInput.at("max_runtime", "give max_runtime_s or max_runtime, not both")
            runtime = int(self.max_runtime)
        retry = self.retry or RetryPolicy()
        return JobSpec(
            name=self.name,
            command=list(self.command) if self.command is not None else None,
            script=self.script,
            model_type=self.model_type,
            env=dict(self.env),
            working_dir=self.working_dir,
            labels=dict(self.labels),
            priority=self.priority,
            gpu=GpuRequirement(
                count=self.gpu_count,
                milli=self.gpu_milli if self.gpu_milli is not None else WHOLE_GPU_MILLI,
                memory_min_mib=mib_of_gb(memory_gb),
                models=tuple(models),
            ),
            cpu_milli=round((self.cpu_cores or 0) * 1000),
            ram_mb=mib_of_gb(self.ram_gb),
            max_runtime_s=runtime,
            retry_on_host_loss=retry.on_host_loss,
            retry_on_failure=retry.on_failure,
            max_attempts=retry.max_attempts,
        )

    def wire_error(self, exc: InvalidInput) -> InvalidInput:
        """``exc`` from the service, naming the field as this request spelled it."""
        field = str(exc.extra.get("field", ""))
        head, dot, rest = field.partition(".")
        head, _, index = head.partition("[")
        wire = self._wire_name(head)
        if wire == head:
            return exc
        # The sketch's fields are single values: no index to carry over.
        single = wire.startswith("gpu_requirements.")
        renamed = wire if single else wire + (f"[{index}" if index else "") + dot + rest
        message = exc.message.removeprefix(f"{field}: ")
        return InvalidInput(f"{renamed}: {message}", field=renamed)

    def _wire_name(self, spec_field: str) -> str:
        sketch = self.gpu_requirements
        names = {
            "min_memory_mb": "gpu_requirements.min_memory"
            if sketch and sketch.min_memory is not None
            else "min_memory_gb",
            "gpu_models": "gpu_requirements.gpu_type" if sketch and sketch.gpu_type is not None else "gpu_models",
            "cpu_milli": "cpu_cores",
            "ram_mb": "ram_gb",
            "max_runtime_s": "max_runtime" if self.max_runtime is not None else "max_runtime_s",
            "retry_on_host_loss": "retry.on_host_loss",
            "retry_on_failure": "retry.on_failure",
            "max_attempts": "retry.max_attempts",
        }
        return names.get(spec_field, spec_field)


class RetryRead(ResponseModel):
    on_host_loss: bool
    on_failure: bool
    max_attempts: int


class Requirements(ResponseModel):
    gpu_count: int
    gpu_milli: int = Field(description="Per GPU, in thousandths; 1000 is a whole GPU, 0 for CPU-only jobs.")
    min_memory_mb: int = Field(description="GPU memory per GPU, MiB.")
    gpu_models: list[str]
    cpu_milli: int
    ram_mb: int


class AllocatedGpu(ResponseModel):
    gpu_id: UUID
    host_id: UUID
    milli: int
    memory_mb: int


class JobRead(ResponseModel):
    id: UUID
    organization_id: UUID
    name: str
    status: JobStatus
    status_reason: str | None = Field(description="Why the job ended as it did (failures, cancellations).")
    pending_reason: str | None = Field(description="While pending: why it waits (capacity or quota).")
    command: list[str] | None
    script: str | None
    env: dict[str, str]
    working_dir: str | None
    labels: dict[str, str]
    model_type: str | None
    priority: int
    max_runtime_s: int | None
    retry: RetryRead
    requirements: Requirements
    attempt: int
    host_id: UUID | None
    gpus: list[AllocatedGpu] = Field(description="The GPUs held now (allocated or running jobs).")
    exit_code: int | None
    submitted_by: UUID | None
    cancel_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost: Decimal | None = Field(
        default=None, description="Cost so far over all attempts, running time included (exact; docs/costs.md)."
    )
    cost_estimate: Decimal | None = Field(
        default=None, description="max_runtime_s at the price in force at submission (null: no max_runtime_s)."
    )
    kind: str = Field(default="job", description="`job`, or `replica`: a deployment's replica (docs/predictions.md).")

    @property
    def finished(self) -> bool:
        return self.status in states.JOB_TERMINAL

    @classmethod
    def of(cls, job: Job, gpus: Sequence[Allocation] = (), cost: Decimal | None = None) -> JobRead:
        s = job.spec
        return cls(
            id=job.id,
            organization_id=job.organization_id,
            name=job.name,
            kind=job.kind,
            status=job.status,
            status_reason=job.status_reason,
            pending_reason=job.pending_reason if job.status is JobStatus.PENDING else None,
            command=s.command,
            script=s.script,
            env=s.env,
            working_dir=s.working_dir,
            labels=s.labels,
            model_type=s.model_type,
            priority=s.priority,
            max_runtime_s=s.max_runtime_s,
            retry=RetryRead(
                on_host_loss=s.retry_on_host_loss, on_failure=s.retry_on_failure, max_attempts=s.max_attempts
            ),
            requirements=Requirements(
                gpu_count=s.gpu.count,
                gpu_milli=s.gpu.milli,
                min_memory_mb=s.gpu.memory_min_mib,
                gpu_models=list(s.gpu.models),
                cpu_milli=s.cpu_milli,
                ram_mb=s.ram_mb,
            ),
            attempt=job.attempt,
            host_id=job.host_id,
            gpus=[
                AllocatedGpu(gpu_id=a.gpu_id, host_id=a.host_id, milli=a.milli, memory_mb=a.memory_mib) for a in gpus
            ],
            exit_code=job.exit_code,
            submitted_by=job.submitted_by,
            cancel_requested_at=job.cancel_requested_at,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            cost=cost,
            cost_estimate=job.cost_estimate,
        )


JobPage = Page[JobRead]


class EventRead(ResponseModel):
    seq: int = Field(description="Increases with every event; pass the last one seen as after_seq.")
    type: str
    data: dict[str, Any]
    actor: str | None
    created_at: datetime

    @classmethod
    def of(cls, e: Event) -> EventRead:
        return cls(seq=e.seq, type=e.type, data=e.data, actor=e.actor, created_at=e.created_at)


class QuotaSet(Strict):
    gpu_model: Trimmed | None = Field(
        default=None, min_length=1, max_length=100, description="A GPU model; null (or absent) for all GPUs together."
    )
    max_gpus: int = Field(
        ge=0, le=MAX_QUOTA_GPUS, description="Whole-GPU equivalents held at once (0.5-GPU jobs count 0.5)."
    )


class QuotaRead(ResponseModel):
    id: UUID
    gpu_model: str | None
    max_gpus: int
    used_gpus: float = Field(description="Allocated now under this quota, in whole-GPU equivalents.")
    created_at: datetime
    updated_at: datetime
