"""Plain factory functions for test data; each writes through the system path."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.costs import BudgetPeriod
from gpufleet.domain.hosts import GpuDetail, HostDetail
from gpufleet.domain.jobs import Job, JobSpec
from gpufleet.domain.tenancy import Organization, Role, TenantContext, User
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import orgs
from gpufleet.repo.gpus import gpu_row
from gpufleet.repo.hosts import host_row


def ctx_for(org_id: UUID, user_id: UUID | None = None, role: Role = Role.OWNER) -> TenantContext:
    """What a service gets for a member's request (``user_id``), or for the system when None."""
    return TenantContext.of_user(org_id, user_id, role) if user_id else TenantContext.system(org_id)


async def create_org(db: Database, name: str = "Acme") -> Organization:
    org_id = uuid.uuid4()
    async with db.system_transaction() as conn:
        return await orgs.create(conn, org_id=org_id, name=name, slug=f"{name.lower()}-{org_id.hex[:8]}")


async def create_user(db: Database, org: Organization | None = None, role: Role = Role.MEMBER) -> User:
    async with db.system_transaction() as conn:
        user = await orgs.create_user(conn, email=f"u{uuid.uuid4().hex[:10]}@example.com", name="Test User")
        if org is not None:
            await orgs.add_member(conn, org_id=org.id, user_id=user.id, role=role)
        return user


async def insert_host(
    conn: Connection, *, org_id: UUID, name: str, cpu_cores: int = 0, ram_mb: int = 0, simulated: bool = False
) -> HostDetail:
    """A ready host with no credential and no agent: what the scheduler's tests place work on."""
    row = await conn.fetchrow(
        """insert into hosts (organization_id, name, hostname, cpu_cores, ram_mb, simulated, last_heartbeat_at)
           values ($1, $2, $2, $3, $4, $5, now()) returning *""",
        org_id,
        name,
        cpu_cores,
        ram_mb,
        simulated,
    )
    assert row is not None
    return host_row(row)


async def insert_gpu(
    conn: Connection,
    *,
    org_id: UUID,
    host_id: UUID,
    uuid: str,
    index: int,
    model: str,
    memory_mb: int,
    simulated: bool = False,
) -> GpuDetail:
    row = await conn.fetchrow(
        """insert into gpu_resources (organization_id, host_id, uuid, index, model, memory_mb, simulated,
                                      last_seen_at)
           values ($1, $2, $3, $4, $5, $6, $7, now()) returning *""",
        org_id,
        host_id,
        uuid,
        index,
        model,
        memory_mb,
        simulated,
    )
    assert row is not None
    return gpu_row(row)


async def create_host(
    db: Database,
    org_id: UUID,
    *,
    name: str | None = None,
    gpus_spec: tuple[tuple[str, int], ...] = (("A100-80GB", 81920),) * 2,
    cpu_cores: int = 64,
    ram_mb: int = 512 * 1024,
) -> tuple[HostDetail, list[GpuDetail]]:
    async with db.system_transaction() as conn:
        host = await insert_host(
            conn,
            org_id=org_id,
            name=name or f"host-{uuid.uuid4().hex[:6]}",
            cpu_cores=cpu_cores,
            ram_mb=ram_mb,
            simulated=True,
        )
        made = [
            await insert_gpu(
                conn,
                org_id=org_id,
                host_id=host.id,
                uuid=f"GPU-{uuid.uuid4()}",
                index=i,
                model=model,
                memory_mb=mem,
                simulated=True,
            )
            for i, (model, mem) in enumerate(gpus_spec)
        ]
        return host, made


# The API's names of a GPU requirement's parts (JobRead.requirements) -> GpuRequirement's.
_GPU_FIELDS = {"gpu_count": "count", "gpu_milli": "milli", "min_memory_mb": "memory_min_mib", "gpu_models": "models"}


def job_spec(**fields: Any) -> JobSpec:
    """A JobSpec from flat keywords, the GPU requirement's spelled as the API spells them (gpu_count=2)."""
    return changed(JobSpec(name="job", command=["true"]), **fields)


def changed(spec: JobSpec, **change: Any) -> JobSpec:
    """``spec`` with fields changed, the GPU requirement's by their API names (gpu_count=2)."""
    gpu = {_GPU_FIELDS[k]: change.pop(k) for k in list(change) if k in _GPU_FIELDS}
    if isinstance(gpu.get("models"), list):
        gpu["models"] = tuple(gpu["models"])
    return replace(spec, **change, gpu=replace(spec.gpu, **gpu))


async def create_job(db: Database, org_id: UUID, **spec: Any) -> Job:
    async with db.transaction(org_id) as conn:
        return await jobs_repo.create_gpu_job(conn, org_id=org_id, spec=job_spec(**spec))


def recent_budget_period() -> dict[str, Any]:
    """``set_budget`` keywords for a 30-day period that began a day ago, so that work a test
    backdates by a few hours is inside it whatever the clock says (a calendar day or month may have
    begun minutes ago, and the hours before it belong to the previous period)."""
    return {"period": BudgetPeriod.CUSTOM, "period_days": 30, "starts_at": datetime.now(UTC) - timedelta(days=1)}
