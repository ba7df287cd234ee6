"""Running work on the wire: assignments, reports and logs between agents and the server, and logs for users.

Log bytes travel base64-encoded (`data_b64`): a job may print anything, and JSON holds only text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AliasChoices, Field

from gpufleet.domain.jobs import is_fractional
from gpufleet.schemas.common import NonNegBigInt, NonNegInt32, PositiveInt32, RequestModel, ResponseModel

OutcomeStatus = Literal["succeeded", "failed", "cancelled", "timed_out", "interrupted"]


class AssignedReplicaOut(ResponseModel):
    """In an assignment of a replica job: what the agent's model runner serves (docs/predictions.md)."""

    replica_id: UUID
    deployment: str = Field(description="owner/name")
    model: str = Field(description="owner/name")
    version_id: UUID
    digest: str
    predict_ref: str
    python_packages: list[str]
    python_version: str | None
    gpu: bool
    is_generator: bool
    concurrency: int


class AssignedGpuOut(ResponseModel):
    gpu_id: UUID
    uuid: str = Field(description="NVML UUID: what CUDA_VISIBLE_DEVICES is set to.")
    index: int
    model: str
    milli: int = Field(description="Share of this GPU, thousandths (1000: whole).")
    # The wire keeps its name; the domain's AssignedGpu says the unit (memory_mib).
    memory_mb: int = Field(
        description="GPU memory the share may use, MiB.", validation_alias=AliasChoices("memory_mb", "memory_mib")
    )


class AssignmentOut(ResponseModel):
    job_id: UUID
    attempt: int = Field(description="Every report about this run must carry it; a stale attempt gets 409.")
    name: str
    command: list[str] | None
    script: str | None
    env: dict[str, str]
    working_dir: str | None
    max_runtime_s: int | None
    gpus: list[AssignedGpuOut]
    gpu_milli: int = Field(description="Per GPU, thousandths; below 1000 a fraction of the one GPU, 0 for CPU only.")
    cpu_milli: int
    ram_mb: int
    allocated_at: datetime | None = None
    replica: AssignedReplicaOut | None = Field(
        default=None, description="A deployment's replica: run the model runner for it, not `command`."
    )

    @property
    def fractional(self) -> bool:
        """The job holds a fraction of one GPU (``gpu_milli``, as the job asked), not whole GPUs."""
        return is_fractional(self.gpu_milli)


class RunningJobIn(RequestModel):
    job_id: UUID
    attempt: PositiveInt32


class KillOrder(ResponseModel):
    """A job attempt the agent must stop (cancelled, timed out, fenced); in heartbeat and long-poll replies."""

    job_id: UUID
    attempt: int
    reason: str = Field(description="cancelled, timed_out or fenced")
    grace_s: float = Field(default=0.0, description="SIGTERM now, SIGKILL after this many seconds.")


class AssignmentsResponse(ResponseModel):
    assignments: list[AssignmentOut]
    kill: list[KillOrder] = Field(
        default_factory=list,
        description="Runs listed in the poll's `running` to stop now (a cancel, or a fence); as in the heartbeat's "
        "`instructions.kill`. Always empty for GET.",
    )


class AssignmentsPoll(RequestModel):
    """POST /v1/agent/assignments: the long-poll that also delivers stops for the listed runs at once."""

    wait_s: float = Field(
        default=0.0, ge=0, le=30, allow_inf_nan=False, description="Long-poll up to this many seconds."
    )
    running: list[RunningJobIn] = Field(
        default_factory=list,
        max_length=10_000,
        description="The (job, attempt)s the agent runs and is not already stopping.",
    )


class StartedIn(RequestModel):
    attempt: PositiveInt32
    pid: PositiveInt32 | None = None


class ExitIn(RequestModel):
    attempt: PositiveInt32
    status: OutcomeStatus
    exit_code: int | None = Field(default=None, ge=-1024, le=1024)
    signal: int | None = Field(default=None, ge=1, le=128)
    reason: str = Field(default="", max_length=4000)


class LogChunkWire(RequestModel):
    seq: NonNegInt32 = Field(description="The agent's order across both streams.")
    stream: Literal["stdout", "stderr"]
    offset: NonNegBigInt = Field(description="Byte offset of `data` within its stream.")
    data_b64: str = Field(default="", max_length=2 * 1024 * 1024)
    dropped_bytes: NonNegBigInt = Field(default=0, description="> 0: the agent lost this many bytes here.")


class LogsIn(RequestModel):
    attempt: PositiveInt32
    chunks: list[LogChunkWire] = Field(max_length=1000)


class LogsAck(ResponseModel):
    acked_seq: int | None = Field(description="The agent may forget chunks up to this seq.")
    stored_chunks: int
    stored_bytes: int
    duplicate_chunks: int
    truncated: bool = Field(description="The attempt reached its log cap; later output is not kept.")


class StartedItemIn(StartedIn):
    job_id: UUID


class ExitItemIn(ExitIn):
    job_id: UUID


class LogsItemIn(LogsIn):
    job_id: UUID


MAX_BATCH_REPORTS = 1000
MAX_BATCH_UPLOADS = 100


class ReportsIn(RequestModel):
    """POST /v1/agent/reports: many reports in one request and one transaction; applied in the order
    starts, logs, exits (a job's start, last output and exit may share one batch)."""

    started: list[StartedItemIn] = Field(default_factory=list, max_length=MAX_BATCH_REPORTS)
    exits: list[ExitItemIn] = Field(default_factory=list, max_length=MAX_BATCH_REPORTS)
    logs: list[LogsItemIn] = Field(
        default_factory=list, max_length=MAX_BATCH_UPLOADS, description="Each as the body of POST .../logs."
    )


class ReportResultOut(ResponseModel):
    """One item's answer. ``stale``: what the single route answers with a 409 (stop the run, report
    nothing more about it); ``invalid``: its 422 (``field`` names the value, e.g. ``logs[0].chunks``)."""

    job_id: UUID
    attempt: int
    result: Literal["applied", "stale", "invalid"]
    detail: str | None = None
    current_attempt: int | None = Field(default=None, description="For `stale`: the job's attempt now.")
    field: str | None = None


class LogsResultOut(ReportResultOut):
    ack: LogsAck | None = Field(default=None, description="For `applied`: what POST .../logs answers.")


class ReportsOut(ResponseModel):
    """Every item answered, in the order of its list in the request."""

    started: list[ReportResultOut]
    exits: list[ReportResultOut]
    logs: list[LogsResultOut]


class ReconcileOutcomeIn(RequestModel):
    status: OutcomeStatus
    exit_code: int | None = Field(default=None, ge=-1024, le=1024)
    signal: int | None = Field(default=None, ge=1, le=128)
    reason: str = Field(default="", max_length=4000)


class ReconcileEntryIn(RequestModel):
    job_id: UUID
    attempt: PositiveInt32
    alive: bool
    outcome: ReconcileOutcomeIn | None = Field(default=None, description="A run that ended while the agent was down.")


class ReconcileIn(RequestModel):
    jobs: list[ReconcileEntryIn] = Field(max_length=10_000, description="Every run the agent knows of: complete.")


class ReconcileDecisionOut(ResponseModel):
    job_id: UUID
    attempt: int
    action: Literal["continue", "kill", "forget"]
    reason: str | None = None
    grace_s: float = 0.0


class ReconcileOut(ResponseModel):
    decisions: list[ReconcileDecisionOut]
    lost: list[UUID] = Field(description="Jobs the server believed running here that the agent did not know.")


class LogEntryOut(ResponseModel):
    attempt: int
    seq: int
    stream: Literal["stdout", "stderr", "system"]
    offset: int
    text: str = Field(description="The bytes decoded as UTF-8, undecodable bytes replaced.")
    data_b64: str = Field(description="The exact bytes.")
    created_at: datetime


class LogPageOut(ResponseModel):
    job_id: UUID
    attempt: int
    chunks: list[LogEntryOut]
    last_seq: int = Field(description="Pass as `after_seq` for the next page.")
    complete: bool = Field(description="The attempt is over and every stored chunk has been read.")
    job_status: str
    current_attempt: int
