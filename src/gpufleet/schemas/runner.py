"""The Model Runner on the wire: what an agent and the server say about replicas and predictions.

A replica is a job of kind ``replica`` whose assignment carries ``replica`` (ReplicaAssignmentOut);
the agent runs the Model Runner's worker for it instead of the job's command, reports the
replica's state, claims predictions for its ready replicas in one long-poll per host, and sends
what the workers produce back as ordered event batches (docs/agent.md, "The Model Runner").
Text from a model (logs, output items) is carried as given: never stripped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from gpufleet.schemas.common import PositiveInt32, RequestModel, ResponseModel

RawText = Annotated[str, StringConstraints(strip_whitespace=False)]


class ReplicaAssignmentOut(ResponseModel):
    """What the agent needs to run a replica's worker (the job's ``command`` is only descriptive)."""

    replica_id: UUID
    deployment: str = Field(description="owner/name of the deployment")
    model: str = Field(description="owner/name of the model: the archive's digest covers it")
    version_id: UUID
    digest: str = Field(description="sha256 of `owner/name\\0` + the archive: the version's id in the API")
    predict_ref: str = Field(description="cog.yaml `predict`, e.g. predict.py:Predictor")
    python_packages: list[str] = Field(default_factory=list)
    python_version: str | None = None
    gpu: bool = False
    is_generator: bool = False
    concurrency: int = Field(default=1, ge=1, le=64)


class ReplicaStateIn(RequestModel):
    job_id: UUID
    attempt: PositiveInt32
    state: Literal["ready", "failed"]
    environment_s: float | None = Field(default=None, ge=0)
    environment_cached: bool | None = None
    setup_s: float | None = Field(default=None, ge=0)
    error: RawText | None = Field(default=None, max_length=8000)


class ClaimReplicaIn(RequestModel):
    replica_id: UUID
    job_id: UUID
    attempt: PositiveInt32
    free_slots: int = Field(ge=0, le=64)


class ClaimIn(RequestModel):
    wait_s: float = Field(default=0.0, ge=0, le=30)
    replicas: list[ClaimReplicaIn] = Field(max_length=1000)


class ClaimedPredictionOut(ResponseModel):
    id: str
    replica_id: UUID
    input: dict[str, Any]
    stream: bool = False
    created_at: datetime | None = None


class ClaimOut(ResponseModel):
    predictions: list[ClaimedPredictionOut] = Field(default_factory=list)
    cancel: list[str] = Field(default_factory=list, description="prediction ids to cancel")
    drain: list[UUID] = Field(default_factory=list, description="replica ids to drain")


class PredictionEventIn(RequestModel):
    prediction_id: str
    replica_id: UUID
    type: Literal["logs", "output", "done"]
    text: RawText | None = None  # logs
    item: Any = None  # output: one streamed item
    status: Literal["succeeded", "failed", "canceled"] | None = None  # done
    output: Any = None  # done: the final output (absent for generators)
    error: RawText | None = None  # done
    predict_time: float | None = Field(default=None, ge=0)  # done


class PredictionEventsIn(RequestModel):
    events: list[PredictionEventIn] = Field(max_length=10_000)


class PredictionEventResultOut(ResponseModel):
    prediction_id: str
    ok: bool
    reason: str | None = None


class PredictionEventsOut(ResponseModel):
    results: list[PredictionEventResultOut] = Field(default_factory=list)


class AgentFileOut(ResponseModel):
    id: str
    url: str
