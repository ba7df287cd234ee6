"""Wire shapes of the dashboard's reads: the fleet with latest samples, fleet series, the queue."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from gpufleet.domain.hosts import GpuStatus, HostStatus, MetricAgg, MetricBucket
from gpufleet.schemas.common import ResponseModel
from gpufleet.schemas.hosts import MetricPointRead
from gpufleet.schemas.jobs import JobRead


class FleetGpuRead(ResponseModel):
    id: UUID
    index: int
    model: str
    memory_mb: int
    status: GpuStatus
    status_reason: str | None
    simulated: bool
    allocated_milli: int = Field(description="Thousandths of the GPU allocated to jobs now.")
    foreign_usage: str | None
    sampled_at: datetime | None = Field(description="The latest sample of the last 5 minutes; null when none.")
    utilization_pct: float | None
    memory_used_mb: float | None
    temperature_c: float | None
    power_w: float | None


class FleetHostRead(ResponseModel):
    id: UUID
    name: str
    status: HostStatus
    status_reason: str | None
    simulated: bool
    last_heartbeat_at: datetime | None
    gpus: list[FleetGpuRead]


class FleetRead(ResponseModel):
    hosts: list[FleetHostRead] = Field(description="Every live host by name, each with its GPUs by index.")
    server_time: datetime


class FleetSeriesRead(ResponseModel):
    start: datetime
    end: datetime
    bucket: MetricBucket
    agg: MetricAgg
    gpus: int = Field(description="How many GPUs the series covers.")
    points: list[MetricPointRead]


class QueueRead(ResponseModel):
    pending: int = Field(description="Jobs waiting in this organization.")
    items: list[JobRead] = Field(description="The first `limit` of them, in the order the scheduler considers them.")
