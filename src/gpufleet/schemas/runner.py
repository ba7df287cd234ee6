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
from gpufleet.schemas.execution import AssignedReplicaOut

RawText = Annotated[str, StringConstraints(strip_whitespace=False)]


# The ``replica`` of an assignment (schemas/execution.py, shared with the job protocol).
ReplicaAssignmentOut = AssignedReplicaOut


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
