"""Hosts and their GPUs: the records, what agents report (facts, samples), join tokens, fleet views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from gpufleet.domain.tenancy import host_actor

if TYPE_CHECKING:
    from gpufleet.config import Settings


class HostStatus(StrEnum):
    READY = "ready"
    UNREACHABLE = "unreachable"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"


class GpuStatus(StrEnum):
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    UNHEALTHY = "unhealthy"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


# Why a GPU is offline when its host stopped listing it; a GPU offline for this reason comes
# back by itself when it is reported again (any other reason needs an admin).
NOT_REPORTED = "not reported by host"


HOST_REMOVED = "host removed"


@dataclass(frozen=True, slots=True)
class JoinToken:
    id: UUID
    organization_id: UUID
    name: str
    prefix: str  # safe to show, e.g. "gfj_Ab12Cd34"
    max_uses: int | None  # None: unlimited
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_by: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedJoinToken:
    token: JoinToken
    secret: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What an agent says about its machine, at registration and (when changed) in heartbeats."""

    hostname: str
    os: str = ""
    kernel: str = ""
    arch: str = ""
    cpu_cores: int = 0
    ram_mb: int = 0
    driver_version: str | None = None
    cuda_version: str | None = None
    agent_version: str | None = None
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class ReportedGpu:
    """One GPU present on a host, as discovered by the agent."""

    uuid: str
    index: int
    model: str
    memory_mb: int
    pci_bus_id: str | None = None
    mig_mode: bool | None = None
    driver_version: str | None = None
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU; None means the GPU does not report that field."""

    uuid: str
    ts: datetime  # timezone-aware; stored as given, never used for liveness
    utilization_pct: float | None = None
    memory_used_mb: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_uncorrected: int | None = None
    xid_errors: int | None = None  # XID events since the agent started watching
    process_count: int | None = None


SAMPLE_COLUMNS = (
    "utilization_pct",
    "memory_used_mb",
    "temperature_c",
    "power_w",
    "ecc_uncorrected",
    "xid_errors",
    "process_count",
)


@dataclass(frozen=True, slots=True)
class SampleSeries:
    """Samples of one GPU column-wise, as the agent sends them: ``ts`` and, per field, a list of
    the same length (None in it: that sample lacks the field) or None (the GPU does not report it).

    The heartbeat's hot path keeps samples so, never an object per sample.
    """

    uuid: str
    ts: Sequence[datetime]
    utilization_pct: Sequence[float | None] | None = None
    memory_used_mb: Sequence[int | None] | None = None
    temperature_c: Sequence[float | None] | None = None
    power_w: Sequence[float | None] | None = None
    ecc_uncorrected: Sequence[int | None] | None = None
    xid_errors: Sequence[int | None] | None = None
    process_count: Sequence[int | None] | None = None

    def column(self, name: str) -> Sequence[Any]:
        """One field's values, ``None`` for each sample when the GPU does not report it."""
        values: Sequence[Any] | None = getattr(self, name)
        return values if values is not None else [None] * len(self.ts)

    def samples(self) -> list[GpuSample]:
        cols = [self.column(name) for name in SAMPLE_COLUMNS]
        return [GpuSample(self.uuid, ts, *values) for ts, *values in zip(self.ts, *cols, strict=True)]


def series_of(samples: Sequence[GpuSample]) -> list[SampleSeries]:
    """Samples as series: one per run of consecutive samples of one GPU, their order kept."""
    out: list[SampleSeries] = []
    start = 0
    while start < len(samples):
        end = start + 1
        while end < len(samples) and samples[end].uuid == samples[start].uuid:
            end += 1
        run = samples[start:end]
        cols = [[getattr(s, name) for s in run] for name in SAMPLE_COLUMNS]
        out.append(SampleSeries(run[0].uuid, [s.ts for s in run], *cols))
        start = end
    return out


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    gpus: Sequence[ReportedGpu]  # every GPU present now; one missing from it goes offline
    samples: Sequence[GpuSample] = ()
    facts: HostFacts | None = None  # None: unchanged since the last report
    series: Sequence[SampleSeries] = ()  # more samples, column-wise (after ``samples``)

    def sample_series(self) -> list[SampleSeries]:
        """Every sample of the report as series, in report order: ``samples`` first, then ``series``."""
        return [*series_of(self.samples), *self.series] if self.samples else list(self.series)


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """The limits and health rules a heartbeat is judged by (from Settings, built once)."""

    max_samples: int = 10_000
    max_gpus: int = 64
    max_clock_skew_s: int = 86_400
    temperature_limit_c: float = 90.0
    foreign_memory_threshold_mb: int = 512
    interval_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HeartbeatPolicy:
        return cls(
            max_samples=settings.heartbeat_max_samples,
            max_gpus=settings.heartbeat_max_gpus,
            max_clock_skew_s=settings.heartbeat_max_clock_skew_s,
            temperature_limit_c=settings.gpu_temperature_limit_c,
            foreign_memory_threshold_mb=settings.foreign_memory_threshold_mb,
            interval_s=settings.heartbeat_interval_s,
        )


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """An authenticated agent: what every agent call acts as."""

    host_id: UUID
    org_id: UUID
    name: str
    simulated: bool
    # SHA-256 of the credential it authenticated with: a heartbeat re-checks it in its own
    # transaction, so an identity remembered by a cache dies with a revoked or replaced credential.
    credential_hash: bytes | None = None

    @property
    def actor(self) -> str:
        """What its events record as their actor (``host:<name>``)."""
        return host_actor(self.name)


@dataclass(frozen=True, slots=True)
class HostDetail:
    id: UUID
    organization_id: UUID
    name: str
    status: HostStatus
    status_reason: str | None
    hostname: str
    os: str
    kernel: str
    arch: str
    cpu_cores: int
    ram_mb: int
    cpu_milli_allocated: int
    ram_mb_allocated: int
    driver_version: str | None
    cuda_version: str | None
    agent_version: str | None
    labels: dict[str, str]
    simulated: bool
    credential_prefix: str | None
    revoked_at: datetime | None
    removed_at: datetime | None
    registered_at: datetime
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GpuDetail:
    id: UUID
    organization_id: UUID
    host_id: UUID
    uuid: str
    index: int
    model: str
    memory_mb: int
    pci_bus_id: str | None
    mig_mode: bool | None
    driver_version: str | None
    status: GpuStatus
    status_reason: str | None
    simulated: bool
    hourly_price: Decimal | None
    allocated_milli: int
    allocated_memory_mb: int
    foreign_usage: str | None
    xid_errors_last: int | None
    version: int
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Registration:
    host: HostDetail
    credential: str  # shown once; the agent keeps it
    gpus: list[GpuDetail]
    reregistered: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    host_status: HostStatus
    server_time: datetime  # the database clock
    samples_received: int
    gpus_added: int = 0
    gpus_changed: int = 0
    next_heartbeat_s: float = 10.0


class MetricBucket(StrEnum):
    RAW = "raw"
    MINUTE = "1m"
    FIVE_MINUTES = "5m"
    HOUR = "1h"

    @property
    def seconds(self) -> int:
        return {"raw": 0, "1m": 60, "5m": 300, "1h": 3600}[self.value]


class MetricAgg(StrEnum):
    AVG = "avg"
    MAX = "max"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    ts: datetime  # the sample time, or the bucket's start
    utilization_pct: float | None
    memory_used_mb: float | None
    temperature_c: float | None
    power_w: float | None
    samples: int = 1


@dataclass(frozen=True, slots=True)
class MetricSeries:
    gpu_id: UUID
    start: datetime
    end: datetime
    bucket: MetricBucket
    agg: MetricAgg
    source: str  # "raw" or "hourly"
    points: list[MetricPoint]
    truncated: bool = False  # raw: more samples than max_points in the range


@dataclass(frozen=True, slots=True)
class ModelCount:
    model: str
    count: int
    simulated: int


@dataclass(frozen=True, slots=True)
class FleetSummary:
    organization_id: UUID
    window_minutes: int
    gpus_total: int
    gpus_by_status: Mapping[str, int]
    gpus_by_model: list[ModelCount]
    gpus_with_foreign_usage: int
    hosts_total: int
    hosts_by_status: Mapping[str, int]
    avg_utilization_pct: float | None  # over the window, all samples of the organization's GPUs
    avg_memory_used_mb: float | None
    samples_in_window: int


@dataclass(frozen=True, slots=True)
class FleetGpu:
    """A GPU as the dashboard's fleet view shows it: its state and its latest sample."""

    id: UUID
    host_id: UUID
    index: int
    model: str
    memory_mb: int
    status: GpuStatus
    status_reason: str | None
    simulated: bool
    allocated_milli: int
    foreign_usage: str | None
    sampled_at: datetime | None  # the latest sample within the freshness window, if any
    utilization_pct: float | None
    memory_used_mb: float | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True, slots=True)
class FleetHost:
    id: UUID
    name: str
    status: HostStatus
    status_reason: str | None
    simulated: bool
    last_heartbeat_at: datetime | None
    gpus: list[FleetGpu]
