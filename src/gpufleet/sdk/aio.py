"""The async client: the sync client's requests, awaited (same arguments, answers and typed errors).

async with AsyncClient() as gf:
    job = await gf.submit_job(name="hello", command=["echo", "hi"], gpu_count=0)
    done = await gf.wait_job(job.id, timeout_s=60)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from gpufleet.domain.hosts import HostStatus
from gpufleet.domain.jobs import JobStatus
from gpufleet.domain.tenancy import Role
from gpufleet.schemas.common import Page
from gpufleet.schemas.events import FeedPage
from gpufleet.schemas.execution import LogPageOut
from gpufleet.schemas.hosts import (
    FleetSummaryRead,
    GpuRead,
    HostDetailRead,
    HostRead,
    JoinTokenCreated,
    JoinTokenRead,
    MetricSeriesRead,
)
from gpufleet.schemas.jobs import EventRead, JobCreate, JobRead, QuotaRead
from gpufleet.schemas.resolve import ResolveRead
from gpufleet.schemas.tenancy import (
    ApiKeyCreated,
    ApiKeyRead,
    InviteCreated,
    InviteRead,
    MemberRead,
    MembershipRead,
    MeRead,
)
from gpufleet.sdk.base import LONG_POLL_MARGIN_S, AsyncBaseClient, page_of
from gpufleet.sdk.client import api_key_body
from gpufleet.sdk.costs import AsyncCostsMixin
from gpufleet.sdk.hosts import hosts_params, metrics_params
from gpufleet.sdk.jobs import JobWait, job_body, jobs_params
from gpufleet.sdk.models import AsyncModelsMixin
from gpufleet.sdk.predictions import AsyncPredictionsMixin


class AsyncClient(AsyncCostsMixin, AsyncModelsMixin, AsyncPredictionsMixin, AsyncBaseClient):
    async def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/readyz")
        return result

    async def me(self) -> MeRead:
        return await self._one(MeRead, "GET", "/v1/me")

    async def events(
        self, *, after_seq: int = 0, wait_s: float = 0.0, entity_type: str | None = None, limit: int = 200
    ) -> FeedPage:
        """The organization's change feed after ``after_seq`` (-1: from now), long-polled up to ``wait_s``."""
        params = {"after_seq": after_seq, "wait_s": wait_s, "entity_type": entity_type, "limit": limit}
        return await self._one(FeedPage, "GET", "/v1/events", params=params, timeout=wait_s + LONG_POLL_MARGIN_S)

    async def list_organizations(self) -> list[MembershipRead]:
        return TypeAdapter(list[MembershipRead]).validate_python(await self.request("GET", "/v1/organizations"))

    async def list_members(self) -> list[MemberRead]:
        return [m async for m in self._all(MemberRead, "/v1/members")]

    async def create_invite(self, email: str, role: Role = Role.MEMBER, expires_in_days: int = 7) -> InviteCreated:
        body = {"email": email, "role": role.value, "expires_in_days": expires_in_days}
        return await self._one(InviteCreated, "POST", "/v1/invites", json=body)

    async def revoke_invite(self, invite_id: UUID) -> InviteRead:
        return await self._one(InviteRead, "DELETE", f"/v1/invites/{invite_id}")

    async def create_api_key(self, name: str, role: Role | None = None) -> ApiKeyCreated:
        return await self._one(ApiKeyCreated, "POST", "/v1/api-keys", json=api_key_body(name, role))

    async def list_api_keys(self) -> list[ApiKeyRead]:
        return [k async for k in self._all(ApiKeyRead, "/v1/api-keys")]

    async def revoke_api_key(self, key_id: UUID) -> ApiKeyRead:
        return await self._one(ApiKeyRead, "DELETE", f"/v1/api-keys/{key_id}")

    async def resolve(self, kind: str, prefix: str) -> ResolveRead:
        return await self._one(ResolveRead, "GET", "/v1/resolve", params={"kind": kind, "prefix": prefix})

    # -- jobs -----------------------------------------------------------------------------

    async def submit_job(self, spec: JobCreate | None = None, **fields: Any) -> JobRead:
        """As ``Client.submit_job``: a ``JobCreate``, or its fields as keywords (keywords win)."""
        return await self._one(JobRead, "POST", "/v1/jobs", json=job_body(spec, **fields))

    async def get_job(self, job_id: UUID) -> JobRead:
        return await self._one(JobRead, "GET", f"/v1/jobs/{job_id}")

    async def jobs_page(
        self,
        *,
        status: Sequence[JobStatus] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[JobRead]:
        raw = await self.request("GET", "/v1/jobs", params=jobs_params(status, labels, limit, cursor))
        return page_of(JobRead, raw)

    async def list_jobs(
        self, *, status: Sequence[JobStatus] | None = None, labels: Mapping[str, str] | None = None
    ) -> AsyncIterator[JobRead]:
        """Every matching job, newest first (``async for``)."""
        async for job in self._all(JobRead, "/v1/jobs", jobs_params(status, labels, None, None)):
            yield job

    async def cancel_job(self, job_id: UUID) -> JobRead:
        return await self._one(JobRead, "POST", f"/v1/jobs/{job_id}/cancel")

    async def job_events(self, job_id: UUID, *, after_seq: int = 0) -> list[EventRead]:
        return [e async for e in self._all(EventRead, f"/v1/jobs/{job_id}/events", {"after_seq": after_seq})]

    async def wait_job(self, job_id: UUID, timeout_s: float | None = None) -> JobRead:
        """As ``Client.wait_job``: the job once finished, or as it is after ``timeout_s``."""
        wait = JobWait(timeout_s)
        while True:
            job = await self._one(JobRead, "GET", f"/v1/jobs/{job_id}/wait", **wait.next_call())
            if job.finished or wait.over():
                return job

    async def job_logs(
        self, job_id: UUID, *, attempt: int | None = None, after_seq: int = -1, limit_bytes: int | None = None
    ) -> LogPageOut:
        """One page of an attempt's output after ``after_seq`` (as ``Client.job_logs``)."""
        params = {"attempt": attempt, "after_seq": after_seq, "limit_bytes": limit_bytes}
        return await self._one(LogPageOut, "GET", f"/v1/jobs/{job_id}/logs", params=params)

    async def list_quotas(self) -> list[QuotaRead]:
        return TypeAdapter(list[QuotaRead]).validate_python(await self.request("GET", "/v1/quotas"))

    async def set_quota(self, max_gpus: int, gpu_model: str | None = None) -> QuotaRead:
        return await self._one(QuotaRead, "PUT", "/v1/quotas", json={"gpu_model": gpu_model, "max_gpus": max_gpus})

    async def delete_quota(self, quota_id: UUID) -> None:
        await self.request("DELETE", f"/v1/quotas/{quota_id}")

    # -- hosts and GPUs -------------------------------------------------------------------

    async def list_hosts(
        self, *, status: HostStatus | str | None = None, include_removed: bool = False
    ) -> list[HostRead]:
        return [h async for h in self._all(HostRead, "/v1/hosts", hosts_params(status, include_removed))]

    async def get_host(self, host_id: UUID) -> HostDetailRead:
        return await self._one(HostDetailRead, "GET", f"/v1/hosts/{host_id}")

    async def list_gpus(self, *, model: str | None = None, host_id: UUID | None = None) -> list[GpuRead]:
        return [g async for g in self._all(GpuRead, "/v1/gpus", {"model": model, "host_id": host_id})]

    async def get_gpu(self, gpu_id: UUID) -> GpuRead:
        return await self._one(GpuRead, "GET", f"/v1/gpus/{gpu_id}")

    async def drain_host(self, host_id: UUID, reason: str | None = None) -> HostRead:
        return await self._one(HostRead, "POST", f"/v1/hosts/{host_id}/drain", json={"reason": reason})

    async def undrain_host(self, host_id: UUID) -> HostRead:
        return await self._one(HostRead, "POST", f"/v1/hosts/{host_id}/undrain")

    async def gpu_metrics(
        self,
        gpu_id: UUID,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "raw",
        agg: str = "avg",
    ) -> MetricSeriesRead:
        params = metrics_params(start, end, bucket, agg)
        return await self._one(MetricSeriesRead, "GET", f"/v1/gpus/{gpu_id}/metrics", params=params)

    async def fleet_summary(self, window_minutes: int = 15) -> FleetSummaryRead:
        params = {"window_minutes": window_minutes}
        return await self._one(FleetSummaryRead, "GET", "/v1/fleet/summary", params=params)

    async def create_join_token(
        self, name: str = "", *, max_uses: int | None = None, expires_in_hours: float = 24.0
    ) -> JoinTokenCreated:
        body = {"name": name, "max_uses": max_uses, "expires_in_hours": expires_in_hours}
        return await self._one(JoinTokenCreated, "POST", "/v1/join-tokens", json=body)

    async def revoke_join_token(self, token_id: UUID) -> JoinTokenRead:
        return await self._one(JoinTokenRead, "DELETE", f"/v1/join-tokens/{token_id}")
