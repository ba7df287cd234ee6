"""Join tokens, hosts, GPUs, GPU metrics and the fleet summary on the wire (users' side)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pydantic import Field

from gpufleet.domain.hosts import GpuStatus, HostStatus, MetricAgg, MetricBucket
from gpufleet.schemas.common import RequestModel, ResponseModel


class JoinTokenCreate(RequestModel):
    name: str = Field(default="", max_length=200, description="A note for admins, e.g. the rack it is for.")
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000, description="Empty: unlimited uses.")
    expires_in_hours: float = Field(default=24.0, ge=1 / 60, le=24 * 365, description="1 minute to 365 days.")


class JoinTokenRead(ResponseModel):
    id: UUID
    name: str
    prefix: str = Field(description="The first characters of the token, safe to show.")
    max_uses: int | None
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_by: UUID | None
    created_at: datetime


class JoinTokenCreated(JoinTokenRead):
    token: str = Field(description="Shown once: run `gpufleet agent --join-token <token>` on the host.")


class HostRead(ResponseModel):
    id: UUID
    name: str
    status: HostStatus
    status_reason: str | None
    simulated: bool = Field(description="True for a host whose GPUs are simulated (development, demos).")
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
    credential_prefix: str | None
    revoked_at: datetime | None
    removed_at: datetime | None
    registered_at: datetime
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime


class GpuRead(ResponseModel):
    id: UUID
    host_id: UUID
    uuid: str
    index: int
    model: str
    memory_mb: int
    status: GpuStatus
    status_reason: str | None
    simulated: bool
    foreign_usage: str | None = Field(
        description="Set while the GPU shows memory or processes that gpufleet did not allocate."
    )
    pci_bus_id: str | None
    mig_mode: bool | None
    driver_version: str | None
    hourly_price: Decimal | None
    allocated_milli: int
    allocated_memory_mb: int
    xid_errors_last: int | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


class HostDetailRead(HostRead):
    gpus: list[GpuRead]


class HostStatusChange(RequestModel):
    reason: str | None = Field(default=None, max_length=500, description="Kept as the status reason.")


class MaintenanceChange(RequestModel):
    on: bool = Field(default=True, description="true: into maintenance; false: back into service.")
    reason: str | None = Field(default=None, max_length=500)


class MetricPointRead(ResponseModel):
    ts: datetime = Field(description="The sample's time, or the start of its bucket.")
    utilization_pct: float | None
    memory_used_mb: float | None
    temperature_c: float | None
    power_w: float | None
    samples: int


class MetricSeriesRead(ResponseModel):
    gpu_id: UUID
    start: datetime
    end: datetime
    bucket: MetricBucket = Field(description="The bucket answered; `1h` when the range starts before raw retention.")
    agg: MetricAgg
    source: str = Field(description="`raw` samples or `hourly` rollups.")
    truncated: bool = Field(description="raw: more samples exist; ask again from the last point's `ts`.")
    points: list[MetricPointRead]


class ModelCountRead(ResponseModel):
    model: str
    count: int
    simulated: int


class FleetSummaryRead(ResponseModel):
    organization_id: UUID
    window_minutes: int
    gpus_total: int
    gpus_by_status: dict[str, int]
    gpus_by_model: list[ModelCountRead]
    gpus_with_foreign_usage: int
    gpus_simulated: int
    hosts_total: int
    hosts_by_status: dict[str, int]
    avg_utilization_pct: float | None
    avg_memory_used_mb: float | None
    samples_in_window: int
