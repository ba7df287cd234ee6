"""The async client: the sync client's requests, awaited (same arguments, answers and typed errors).

async with AsyncClient() as gf:
    job = await gf.submit_job(name="hello", command=["echo", "hi"], gpu_count=0)
    done = await gf.wait_job(job.id, timeout_s=60)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from gpufleet.domain import HostStatus, JobStatus
from gpufleet.schemas.common import Page
from gpufleet.schemas.hosts import GpuRead, HostDetailRead, HostRead
from gpufleet.schemas.jobs import WAIT_MAX_S, EventRead, JobCreate, JobRead, QuotaRead
from gpufleet.schemas.resolve import ResolveRead
from gpufleet.schemas.tenancy import MeRead
from gpufleet.sdk.base import AsyncBaseClient, page_of
from gpufleet.sdk.jobs import job_body, jobs_params


class AsyncClient(AsyncBaseClient):
    async def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/readyz")
        return result

    async def me(self) -> MeRead:
        return await self._one(MeRead, "GET", "/v1/me")

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
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        while True:
            left = WAIT_MAX_S if deadline is None else max(0.0, deadline - time.monotonic())
            step = min(left, WAIT_MAX_S)
            job = await self._one(
                JobRead, "GET", f"/v1/jobs/{job_id}/wait", params={"timeout_s": round(step, 3)}, timeout=step + 30.0
            )
            if job.finished or (deadline is not None and time.monotonic() >= deadline):
                return job

    async def list_quotas(self) -> list[QuotaRead]:
        return TypeAdapter(list[QuotaRead]).validate_python(await self.request("GET", "/v1/quotas"))

    # -- hosts and GPUs -------------------------------------------------------------------

    async def list_hosts(
        self, *, status: HostStatus | str | None = None, include_removed: bool = False
    ) -> list[HostRead]:
        params = {"status": str(status) if status else None, "include_removed": str(include_removed).lower()}
        return [h async for h in self._all(HostRead, "/v1/hosts", params)]

    async def get_host(self, host_id: UUID) -> HostDetailRead:
        return await self._one(HostDetailRead, "GET", f"/v1/hosts/{host_id}")

    async def list_gpus(self, *, model: str | None = None, host_id: UUID | None = None) -> list[GpuRead]:
        return [g async for g in self._all(GpuRead, "/v1/gpus", {"model": model, "host_id": host_id})]

    async def get_gpu(self, gpu_id: UUID) -> GpuRead:
        return await self._one(GpuRead, "GET", f"/v1/gpus/{gpu_id}")
