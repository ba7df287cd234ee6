"""Predictions and deployments on the wire, in Replicate's shapes (plus gpufleet's own fields),
and the agent's side of predictions (replica state, claims, events)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.domain.models import Hardware
from gpufleet.domain.predictions import (
    WEBHOOK_EVENTS,
    ClaimResult,
    ClaimSlot,
    DeploymentView,
    Prediction,
    PredictionEvent,
    Replica,
    parse_hardware,
)
from gpufleet.schemas.common import JsonObject, PositiveInt32, RequestModel, ResponseModel, vars_of
from gpufleet.schemas.models import CpuCores, GpuModels, MinMemoryGb, RamGb, WholeGpus, hardware_asked

WebhookEvent = Literal["start", "output", "logs", "completed"]


# ------------------------------------------------------------------------------ predictions


class PredictionCreate(RequestModel):
    """`POST /v1/predictions` (with `version`), `/v1/models/{owner}/{name}/predictions` and
    `/v1/deployments/{owner}/{name}/predictions` (without)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)  # inputs are the model's, as sent

    version: str | None = Field(
        default=None, max_length=300, description="A version id (64 hex digits) or `owner/name:version`."
    )
    input: JsonObject = Field(default_factory=dict, description="The model's inputs, checked against its schema.")
    webhook: str | None = Field(default=None, max_length=2000, description="An http(s) URL told of this prediction.")
    webhook_events_filter: list[WebhookEvent] | None = Field(
        default=None,
        max_length=4,
        description=f"Which of {', '.join(WEBHOOK_EVENTS)} reach the webhook (default: all).",
    )
    webhook_completed: str | None = Field(
        default=None, max_length=2000, description="Older clients' name for a webhook told only of the end."
    )
    stream: bool = Field(default=False, description="Offer `urls.stream` (server-sent events).")


class PredictionRead(ResponseModel):
    id: str
    model: str = Field(description="owner/name")
    version: str | None = Field(description="The version id (its digest).")
    input: dict[str, Any]
    output: Any = None
    error: str | None = None
    logs: str = ""
    status: Literal["starting", "processing", "succeeded", "failed", "canceled"]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    data_removed: bool = False
    source: str = "api"
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="predict_time, total_time, queue_time, cold_start (and environment_time, setup_time on one).",
    )
    urls: dict[str, str] = Field(
        description="`get`, `cancel`, and `stream` when the prediction was created with `stream`."
    )
    deployment: str | None = Field(default=None, description="owner/name, when created through a deployment.")
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @classmethod
    def of(cls, p: Prediction, base_url: str, owner: str, *, waited: bool = False) -> PredictionRead:
        return cls.model_validate(p.as_replicate(owner, base_url, waited=waited))


class WebhookSecretRead(ResponseModel):
    key: str = Field(description="`whsec_...`: signs the organization's prediction webhooks.")


# ------------------------------------------------------------------------------ deployments


class _Scaling(RequestModel):
    min_instances: int | None = Field(
        default=None, ge=0, le=100, description="Replicas kept running (0: scale to zero)."
    )
    max_instances: int | None = Field(default=None, ge=1, le=100, description="Most replicas at once.")
    idle_timeout_s: int | None = Field(default=None, ge=1, le=86400, description="Idle this long: drained.")
    hardware: str | None = Field(
        default=None, max_length=100, description="`CPU`, `1x GPU`, `0.5 GPU`, `2x A100 >=40 GiB`, or `gpu-t4`-style."
    )
    gpus: WholeGpus = None
    gpu_fraction: float | None = Field(default=None, gt=0, le=1, description="A share of one GPU; excludes `gpus`.")
    min_memory_gb: MinMemoryGb = None
    gpu_model: GpuModels = None
    cpu: CpuCores = None
    ram_gb: RamGb = None

    def to_hardware(self) -> Hardware | None:
        asked = hardware_asked(self)
        if all(v is None for v in asked.values()):
            return parse_hardware(self.hardware) if self.hardware is not None else None
        return Hardware.of(**asked)


class DeploymentCreate(_Scaling):
    name: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=3, max_length=200, description="owner/name")
    version: str | None = Field(default=None, max_length=64, description="Default: the model's latest version.")
    owner: str | None = Field(default=None, max_length=100, description="Default: the caller's organization.")


class DeploymentUpdate(_Scaling):
    version: str | None = Field(default=None, max_length=64, description="A new version: a new release, rolled out.")


class DeploymentConfiguration(ResponseModel):
    hardware: str
    min_instances: int
    max_instances: int


class DeploymentRelease(ResponseModel):
    number: int
    model: str
    version: str
    created_at: datetime
    created_by: dict[str, Any] | None = None
    configuration: DeploymentConfiguration


class ReplicaRead(ResponseModel):
    id: UUID
    job_id: UUID
    status: str
    version: str | None = Field(description="The version id it runs (its digest).")
    release: int
    host_id: UUID | None
    in_flight: int
    slots: int
    environment_s: float | None
    environment_cached: bool | None
    setup_s: float | None
    error: str | None
    ready_at: datetime | None
    last_active_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, r: Replica, digests: dict[UUID, str]) -> ReplicaRead:
        return cls.model_validate({**vars_of(r), "status": r.status.value, "version": digests.get(r.version_id)})


class DeploymentRead(ResponseModel):
    owner: str
    name: str
    current_release: DeploymentRelease
    implicit: bool = Field(description="The model's own deployment (`POST /v1/models/{owner}/{name}/predictions`).")
    idle_timeout_s: int
    concurrency: int = Field(description="Predictions one replica runs at once (cog.yaml `concurrency.max`).")
    replicas: list[ReplicaRead]
    queued: int = Field(description="Predictions waiting for a replica.")
    oldest_queued_s: float | None
    failures: int = Field(description="Replica crashes in a row (restarts back off 1, 2, 4 ... 60 s).")
    next_start_after: datetime | None

    @classmethod
    def of(cls, view: DeploymentView) -> DeploymentRead:
        d = view.deployment
        digests = {d.version_id: d.digest}
        return cls(
            owner=view.owner,
            name=d.name,
            current_release=DeploymentRelease(
                number=d.release,
                model=f"{view.owner}/{d.model_name}",
                version=d.digest,
                created_at=d.updated_at,
                configuration=DeploymentConfiguration(
                    hardware=d.hardware.label(), min_instances=d.min_replicas, max_instances=d.max_replicas
                ),
            ),
            implicit=d.implicit,
            idle_timeout_s=d.idle_timeout_s,
            concurrency=d.concurrency,
            replicas=[ReplicaRead.of(r, digests) for r in view.replicas],
            queued=view.queued,
            oldest_queued_s=view.oldest_queued_s,
            failures=d.failures,
            next_start_after=d.next_start_after,
        )


# ------------------------------------------------------------------------------ the agent's side


class ReplicaStateIn(RequestModel):
    job_id: UUID
    attempt: PositiveInt32
    state: Literal["ready", "failed"]
    environment_s: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    environment_cached: bool | None = None
    setup_s: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    error: str | None = Field(default=None, max_length=20_000)


class ClaimReplicaIn(RequestModel):
    replica_id: UUID
    job_id: UUID
    attempt: PositiveInt32
    free_slots: int = Field(ge=0, le=64)

    def to_domain(self) -> ClaimSlot:
        return ClaimSlot(self.replica_id, self.job_id, self.attempt, self.free_slots)


class ClaimIn(RequestModel):
    wait_s: float = Field(default=0.0, ge=0, le=30, allow_inf_nan=False, description="Long-poll up to this long.")
    replicas: list[ClaimReplicaIn] = Field(default_factory=list, max_length=64)


class ClaimedOut(ResponseModel):
    id: UUID
    replica_id: UUID
    input: dict[str, Any]
    stream: bool
    created_at: datetime


class ClaimOut(ResponseModel):
    predictions: list[ClaimedOut]
    cancel: list[UUID] = Field(description="Predictions to stop (they end `canceled`).")
    drain: list[UUID] = Field(description="Replicas to drain: no new claims, finish in-flight, exit 0.")

    @classmethod
    def of(cls, r: ClaimResult) -> ClaimOut:
        return cls(
            predictions=[ClaimedOut.model_validate(c) for c in r.predictions],
            cancel=r.cancel,
            drain=r.drain,
        )


class _AgentReport(BaseModel):
    """What a worker printed or returned is taken as it is: NUL characters in logs are dropped,
    and an item PostgreSQL cannot store fails that one event, never the batch (so no body-wide
    text check here, unlike ``RequestModel``)."""

    model_config = ConfigDict(extra="forbid")


class PredictionEventIn(_AgentReport):
    prediction_id: UUID
    replica_id: UUID
    type: Literal["logs", "output", "done"]
    text: str | None = Field(default=None, max_length=1024 * 1024, description="logs: text to append.")
    item: Any = Field(default=None, description="output: one streamed item (JSON).")
    status: Literal["succeeded", "failed", "canceled"] | None = Field(default=None, description="done: how it ended.")
    output: Any = Field(default=None, description="done: the final output; leave it out for generators.")
    error: str | None = Field(default=None, max_length=20_000)
    predict_time: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)

    def to_domain(self) -> PredictionEvent:
        # The body's fields as they are (dict(self) copies nothing), and whether `output` was sent.
        return PredictionEvent(**dict(self), has_output="output" in self.model_fields_set)


class EventsIn(_AgentReport):
    events: list[PredictionEventIn] = Field(max_length=1000)


class EventResultOut(ResponseModel):
    prediction_id: UUID
    ok: bool
    reason: str | None = None


class EventsOut(ResponseModel):
    results: list[EventResultOut]
