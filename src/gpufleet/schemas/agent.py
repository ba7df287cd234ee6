"""What a node agent and the server say to each other: registration and heartbeats.

Metric samples travel column-wise, one object per GPU with parallel arrays
(``ts``, ``utilization_pct``, ...): a full report (10,000 samples) stays well under the
1 MiB body limit and parses several times faster than one JSON object per sample.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from gpufleet.domain.hosts import SAMPLE_COLUMNS, HeartbeatReport, HostFacts, HostStatus, ReportedGpu, SampleSeries
from gpufleet.schemas.common import RequestModel, ResponseModel
from gpufleet.schemas.execution import KillOrder as KillOrder  # re-exported: the heartbeat's instruction
from gpufleet.schemas.execution import RunningJobIn
from gpufleet.schemas.hosts import GpuRead

MAX_SERIES = 10_000  # samples of one GPU in one report; the server's total limit is a setting
Text = Annotated[str, Field(max_length=200)]
Column = Annotated[list[float | None] | None, Field(default=None, max_length=MAX_SERIES)]
IntColumn = Annotated[list[int | None] | None, Field(default=None, max_length=MAX_SERIES)]


class HostFactsIn(RequestModel):
    hostname: str = Field(min_length=1, max_length=253)
    os: Text = ""
    kernel: Text = ""
    arch: Text = ""
    cpu_cores: int = Field(default=0, ge=0, le=1_000_000)
    ram_mb: int = Field(default=0, ge=0, le=2**62)
    driver_version: Text | None = None
    cuda_version: Text | None = None
    agent_version: Text | None = None
    simulated: bool = False

    def to_domain(self) -> HostFacts:
        return HostFacts(**self.model_dump())


class GpuIn(RequestModel):
    uuid: str = Field(min_length=1, max_length=128)
    index: int = Field(ge=0, le=4095)
    model: str = Field(min_length=1, max_length=200)
    memory_mb: int = Field(ge=1, le=2**31 - 1)
    pci_bus_id: str | None = Field(default=None, max_length=64)
    mig_mode: bool | None = None
    driver_version: Text | None = None
    simulated: bool = False

    def to_domain(self) -> ReportedGpu:
        return ReportedGpu(**self.model_dump())


class GpuMetricsIn(RequestModel):
    """Samples of one GPU: ``ts`` and, per field, an array of the same length (or null: not reported)."""

    uuid: str = Field(min_length=1, max_length=128)
    ts: list[datetime] = Field(max_length=MAX_SERIES, description="Timezone-aware sample times.")
    utilization_pct: Column
    memory_used_mb: IntColumn
    temperature_c: Column
    power_w: Column
    ecc_uncorrected: IntColumn
    xid_errors: IntColumn
    process_count: IntColumn

    @model_validator(mode="after")
    def _same_lengths(self) -> GpuMetricsIn:
        n = len(self.ts)
        for name in COLUMNS:
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"{name} has {len(col)} values for {n} timestamps")
        return self

    def to_domain(self) -> SampleSeries:
        """Column-wise as it came: no object per sample."""
        return SampleSeries(self.uuid, self.ts, *(getattr(self, name) for name in COLUMNS))


COLUMNS = SAMPLE_COLUMNS


class RegisterRequest(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=253, description="Default: the hostname.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    facts: HostFactsIn
    gpus: list[GpuIn] = Field(max_length=4096)

    @field_validator("labels")
    @classmethod
    def _printable(cls, labels: dict[str, str]) -> dict[str, str]:
        for k, v in labels.items():
            if not (k.isprintable() and v.isprintable()):
                raise ValueError(f"label {k!r}: keys and values must be printable text")
        return labels


class RegisterResponse(ResponseModel):
    host_id: UUID
    organization_id: UUID
    name: str
    simulated: bool
    reregistered: bool = Field(description="A revoked host of this name came back with a new credential.")
    credential: str = Field(description="Shown once: the agent stores it and sends it as `Bearer gfh_...`.")
    heartbeat_interval_s: float
    gpus: list[GpuRead]


class HeartbeatRequest(RequestModel):
    facts: HostFactsIn | None = Field(default=None, description="Only when they changed; null: unchanged.")
    gpus: list[GpuIn] = Field(max_length=4096, description="Every GPU present now; a missing one goes offline.")
    metrics: list[GpuMetricsIn] = Field(default_factory=list, max_length=4096)
    running: list[RunningJobIn] = Field(
        default_factory=list, max_length=10_000, description="The job attempts running on this host now."
    )

    def to_domain(self) -> HeartbeatReport:
        """The report; its samples are ``metrics`` in order, flattened sample ``k`` is ``locate(k)``."""
        facts = self.facts.to_domain() if self.facts is not None else None
        series = [m.to_domain() for m in self.metrics]
        return HeartbeatReport(gpus=[g.to_domain() for g in self.gpus], series=series, facts=facts)

    def locate(self, flat: int) -> tuple[int, int] | None:
        """Where the report's flattened sample ``flat`` is on the wire: (metrics index, position)."""
        for i, series in enumerate(self.metrics):
            if flat < len(series.ts):
                return i, flat
            flat -= len(series.ts)
        return None


class AgentInstructions(ResponseModel):
    kill: list[KillOrder] = Field(default_factory=list)


class HeartbeatResponse(ResponseModel):
    host_id: UUID
    host_status: HostStatus
    server_time: datetime = Field(description="The database clock.")
    heartbeat_interval_s: float = Field(description="Send the next heartbeat after this many seconds.")
    samples_received: int
    gpus_added: int
    gpus_changed: int
    instructions: AgentInstructions = Field(default_factory=AgentInstructions)
