"""SDK methods: Hosts, GPUs, metrics and join tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.domain.hosts import GpuStatus, HostStatus
from gpufleet.schemas.hosts import (
    FleetSummaryRead,
    GpuRead,
    HostDetailRead,
    HostRead,
    JoinTokenCreated,
    JoinTokenRead,
    MetricSeriesRead,
)
from gpufleet.sdk.base import BaseClient


def hosts_params(status: HostStatus | str | None, include_removed: bool) -> dict[str, Any]:
    return {"status": str(status) if status else None, "include_removed": str(include_removed).lower()}


def metrics_params(start: datetime | None, end: datetime | None, bucket: str, agg: str) -> dict[str, Any]:
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "bucket": bucket,
        "agg": agg,
    }


class HostsMixin(BaseClient):
    # -- join tokens ----------------------------------------------------------------------

    def create_join_token(
        self, name: str = "", *, max_uses: int | None = None, expires_in_hours: float = 24.0
    ) -> JoinTokenCreated:
        body = {"name": name, "max_uses": max_uses, "expires_in_hours": expires_in_hours}
        return self._one(JoinTokenCreated, "POST", "/v1/join-tokens", json=body)

    def list_join_tokens(self, *, include_inactive: bool = False) -> list[JoinTokenRead]:
        params = {"include_inactive": str(include_inactive).lower()}
        return list(self._all(JoinTokenRead, "/v1/join-tokens", params))

    def revoke_join_token(self, token_id: UUID) -> JoinTokenRead:
        return self._one(JoinTokenRead, "DELETE", f"/v1/join-tokens/{token_id}")

    # -- hosts ----------------------------------------------------------------------------

    def list_hosts(self, *, status: HostStatus | str | None = None, include_removed: bool = False) -> list[HostRead]:
        return list(self._all(HostRead, "/v1/hosts", hosts_params(status, include_removed)))

    def get_host(self, host_id: UUID) -> HostDetailRead:
        return self._one(HostDetailRead, "GET", f"/v1/hosts/{host_id}")

    def drain_host(self, host_id: UUID, reason: str | None = None) -> HostRead:
        return self._one(HostRead, "POST", f"/v1/hosts/{host_id}/drain", json={"reason": reason})

    def undrain_host(self, host_id: UUID) -> HostRead:
        return self._one(HostRead, "POST", f"/v1/hosts/{host_id}/undrain")

    def set_host_maintenance(self, host_id: UUID, on: bool = True, reason: str | None = None) -> HostRead:
        body = {"on": on, "reason": reason}
        return self._one(HostRead, "POST", f"/v1/hosts/{host_id}/maintenance", json=body)

    def revoke_host(self, host_id: UUID) -> HostRead:
        return self._one(HostRead, "POST", f"/v1/hosts/{host_id}/revoke")

    def remove_host(self, host_id: UUID) -> HostRead:
        return self._one(HostRead, "DELETE", f"/v1/hosts/{host_id}")

    # -- GPUs -----------------------------------------------------------------------------

    def list_gpus(
        self,
        *,
        model: str | None = None,
        status: GpuStatus | str | None = None,
        host_id: UUID | None = None,
    ) -> list[GpuRead]:
        params = {"model": model, "status": str(status) if status else None, "host_id": host_id}
        return list(self._all(GpuRead, "/v1/gpus", params))

    def get_gpu(self, gpu_id: UUID) -> GpuRead:
        return self._one(GpuRead, "GET", f"/v1/gpus/{gpu_id}")

    def clear_gpu_health(self, gpu_id: UUID) -> GpuRead:
        return self._one(GpuRead, "POST", f"/v1/gpus/{gpu_id}/clear-health")

    def set_gpu_maintenance(self, gpu_id: UUID, on: bool = True, reason: str | None = None) -> GpuRead:
        return self._one(GpuRead, "POST", f"/v1/gpus/{gpu_id}/maintenance", json={"on": on, "reason": reason})

    def gpu_metrics(
        self,
        gpu_id: UUID,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "raw",
        agg: str = "avg",
    ) -> MetricSeriesRead:
        params = metrics_params(start, end, bucket, agg)
        return self._one(MetricSeriesRead, "GET", f"/v1/gpus/{gpu_id}/metrics", params=params)

    def fleet_summary(self, window_minutes: int = 15) -> FleetSummaryRead:
        return self._one(FleetSummaryRead, "GET", "/v1/fleet/summary", params={"window_minutes": window_minutes})
