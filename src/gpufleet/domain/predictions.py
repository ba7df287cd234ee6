"""Predictions: their status, inputs and outputs, and deployments' queue."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from gpufleet.domain.jobs import mib_of_gb
from gpufleet.domain.models import Hardware
from gpufleet.errors import InvalidInput


class PredictionStatus(StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


PREFER_WAIT_MAX_S = 60


WEBHOOK_EVENTS = ("start", "output", "logs", "completed")


TERMINAL = frozenset({PredictionStatus.SUCCEEDED, PredictionStatus.FAILED, PredictionStatus.CANCELED})


MAX_LOGS_CHARS = 1024 * 1024  # a prediction's logs beyond this are cut (the start is kept, and a note)


BACKOFF_MAX_S = 60


class ReplicaStatus(StrEnum):
    STARTING = "starting"  # its job is queued, placed, or running setup()
    READY = "ready"  # setup() done: it claims predictions
    DRAINING = "draining"  # no new claims; finishes what it runs, then its worker exits 0
    STOPPED = "stopped"  # its job ended


R = ReplicaStatus


REPLICA_TRANSITIONS: dict[ReplicaStatus, frozenset[ReplicaStatus]] = {
    R.STARTING: frozenset({R.READY, R.DRAINING, R.STOPPED}),
    R.READY: frozenset({R.DRAINING, R.STOPPED}),
    R.DRAINING: frozenset({R.STOPPED}),
}


LIVE_REPLICA = frozenset({R.STARTING, R.READY, R.DRAINING})


@dataclass(frozen=True, slots=True)
class Deployment:
    id: UUID
    organization_id: UUID
    name: str
    model_id: UUID
    model_name: str
    version_id: UUID
    digest: str
    implicit: bool
    release: int
    min_replicas: int
    max_replicas: int
    idle_timeout_s: int
    concurrency: int
    hardware: Hardware
    failures: int
    next_start_after: datetime | None
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """A deployment as its readers see it: with its live replicas and its queue."""

    owner: str
    deployment: Deployment
    replicas: list[Replica]
    queued: int
    oldest_queued_s: float | None


@dataclass(frozen=True, slots=True)
class Replica:
    id: UUID
    organization_id: UUID
    deployment_id: UUID
    version_id: UUID
    job_id: UUID
    status: ReplicaStatus
    slots: int
    release: int
    environment_s: float | None
    environment_cached: bool | None
    setup_s: float | None
    error: str | None
    ready_at: datetime | None
    last_active_at: datetime
    stopped_at: datetime | None
    created_at: datetime
    job_status: str | None = None  # its job's status (joined where the caller needs it)
    host_id: UUID | None = None
    in_flight: int = 0  # predictions it is processing now (joined where the caller needs it)
    idle_s: float = 0.0  # since its last claim or completion, by the database clock (joined likewise)


@dataclass(frozen=True, slots=True)
class Prediction:
    id: UUID
    organization_id: UUID
    model: str  # owner/name
    version: str | None  # the version's digest (the API's `version`)
    input: dict[str, Any]
    output: Any
    status: PredictionStatus
    error: str | None
    logs: str
    webhook: str | None
    webhook_events_filter: list[str]
    metrics: dict[str, Any]
    created_by: UUID | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    deployment_id: UUID | None
    version_id: UUID | None
    replica_id: UUID | None
    stream: bool
    cancel_requested: bool
    output_items: int
    source: str
    deployment: str | None = None  # owner/name of an explicit deployment (not the model's own)
    base_url: str | None = None  # the server's address as the creating client saw it (urls, webhooks)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def as_replicate(self, owner: str, base_url: str | None = None, *, waited: bool = False) -> dict[str, Any]:
        """Replicate's JSON of a prediction (the API's answer and a webhook's body). ``waited``: the
        answer to a `Prefer: wait` that ran out reads ``starting``, which tells its client to poll."""
        url = f"{(base_url or self.base_url or '').rstrip('/')}/v1/predictions/{self.id}"
        body: dict[str, Any] = {
            "id": str(self.id),
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "logs": self.logs,
            "status": "starting" if waited and not self.done else self.status.value,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "data_removed": False,
            "source": self.source,
            "metrics": self.metrics,
            "urls": {"get": url, "cancel": f"{url}/cancel", **({"stream": f"{url}/stream"} if self.stream else {})},
            "deployment": f"{owner}/{self.deployment}" if self.deployment else None,
            "webhook": self.webhook,
            "webhook_events_filter": self.webhook_events_filter if self.webhook else None,
        }
        return body


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when is not None else None


@dataclass(frozen=True, slots=True)
class AssignedReplica:
    """What an assignment of a replica job tells the agent's model runner to serve."""

    replica_id: UUID
    deployment: str  # owner/name
    model: str  # owner/name
    version_id: UUID
    digest: str
    predict_ref: str
    python_packages: list[str]
    python_version: str | None
    gpu: bool
    is_generator: bool
    concurrency: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A prediction handed to a replica by the claim."""

    id: UUID
    replica_id: UUID
    input: dict[str, Any]
    stream: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimSlot:
    """One replica the agent offers in a claim: its job attempt (fencing) and free slots."""

    replica_id: UUID
    job_id: UUID
    attempt: int
    free_slots: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    predictions: list[Claimed]
    cancel: list[UUID]
    drain: list[UUID]

    @property
    def empty(self) -> bool:
        return not (self.predictions or self.cancel or self.drain)


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """One event of a running prediction, as the agent reports it (in order)."""

    prediction_id: UUID
    replica_id: UUID
    type: str  # logs | output | done
    text: str | None = None
    item: Any = None
    status: str | None = None  # done: succeeded | failed | canceled
    output: Any = None
    has_output: bool = False  # `output` was sent (null is a valid final output)
    error: str | None = None
    predict_time: float | None = None


@dataclass(frozen=True, slots=True)
class EventResult:
    prediction_id: UUID
    ok: bool
    reason: str | None = None


def backoff_s(failures: int) -> int:
    """Seconds before the next replica start after ``failures`` crashes in a row: 1, 2, 4 ... 60."""
    if failures <= 0:
        return 0
    return int(min(BACKOFF_MAX_S, 2 ** min(failures - 1, 10)))


def parse_prefer_wait(header: str | None) -> float | None:
    """Seconds to hold the answer from a ``Prefer`` header: ``wait`` is 60, ``wait=n`` is n (1..60)."""
    if not header:
        return None
    for part in re.split(r"[,;]", header):
        name, eq, value = part.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not eq:
            return float(PREFER_WAIT_MAX_S)
        value = value.strip().strip('"')
        if not value.isdigit() or not 1 <= int(value) <= PREFER_WAIT_MAX_S:
            raise InvalidInput(
                f"Prefer: wait={value} must be a whole number of seconds from 1 to {PREFER_WAIT_MAX_S}",
                field="Prefer",
            )
        return float(int(value))
    return None


def check_webhook_filter(events: list[str] | None) -> list[str]:
    if events is None:
        return list(WEBHOOK_EVENTS)
    bad = [e for e in events if e not in WEBHOOK_EVENTS]
    if bad:
        raise InvalidInput(
            f"webhook_events_filter: {bad[0]!r} is not one of {', '.join(WEBHOOK_EVENTS)}",
            field="webhook_events_filter",
        )
    return list(dict.fromkeys(events))


_LABEL = re.compile(
    r"^(?:(?P<count>\d+)x\s+|(?P<frac>0?\.\d+|1(?:\.0*)?)\s+)(?P<kind>[^\s>]+)(?:\s+>=(?P<gib>[\d.]+)\s*GiB)?$"
)


_SKU = re.compile(r"^gpu(?:-(?P<count>\d+)x)?(?:-(?P<model>[a-z0-9]+))?(?:-.*)?$")


def parse_hardware(text: str) -> Hardware:
    """A ``hardware`` string: gpufleet's label (``1x GPU``, ``0.5 GPU``, ``2x A100 >=40 GiB``, ``CPU``)
    or a Replicate-style SKU (``cpu``, ``gpu``, ``gpu-t4``, ``gpu-2x-a100``)."""
    raw = text.strip()
    if raw.lower() == "cpu":
        return Hardware(gpu_count=0, gpu_milli=0)
    m = _LABEL.match(raw)
    if m:
        kind = m["kind"]
        models = () if kind.upper() == "GPU" else tuple(k for k in kind.split("/") if k)
        memory = mib_of_gb(float(m["gib"])) if m["gib"] else 0
        if m["count"] is not None:
            count = int(m["count"])
            return Hardware(gpu_count=count, gpu_milli=1000 if count else 0, min_memory_mb=memory, gpu_models=models)
        milli = round(float(m["frac"]) * 1000)
        return Hardware(gpu_count=1, gpu_milli=milli, min_memory_mb=memory, gpu_models=models)
    m = _SKU.match(raw.lower())
    if m:
        count = int(m["count"]) if m["count"] else 1
        model = m["model"]
        return Hardware(gpu_count=count, gpu_milli=1000, gpu_models=(model,) if model else ())
    raise InvalidInput(
        f"hardware: {text!r} is not a hardware string: use e.g. 'CPU', '1x GPU', '0.5 GPU', '2x A100 >=40 GiB'",
        field="hardware",
    )


def replicas_for(queued: int, in_flight: int, concurrency: int) -> int:
    """Replicas needed to run what waits and what runs now, ``concurrency`` at a time each."""
    return math.ceil((queued + in_flight) / max(1, concurrency))
