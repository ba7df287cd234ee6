"""Small builders for the host tests: tokens, facts, GPUs, samples, and the database clock."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import GpuSample, HeartbeatReport, HostFacts, HostIdentity, Registration, ReportedGpu
from gpufleet.services.hosts import authenticate_host, register_host
from gpufleet.services.join_tokens import create_join_token
from tests.factories import ctx_for


def facts(hostname: str = "node-1", **kw: object) -> HostFacts:
    base: dict[str, object] = {
        "hostname": hostname,
        "os": "Linux 6.1",
        "kernel": "6.1.0",
        "arch": "x86_64",
        "cpu_cores": 64,
        "ram_mb": 512 * 1024,
        "driver_version": "550.54",
        "cuda_version": "12.4",
        "agent_version": "0.1.0",
        "simulated": True,
    }
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


def gpu(i: int, *, host: str = "node-1", model: str = "A100-80GB", memory_mb: int = 81920) -> ReportedGpu:
    return ReportedGpu(
        uuid=f"GPU-{host}-{i}",
        index=i,
        model=model,
        memory_mb=memory_mb,
        pci_bus_id=f"0000:{i:02x}:00.0",
        driver_version="550.54",
        simulated=True,
    )


def gpus(n: int = 2, *, host: str = "node-1", model: str = "A100-80GB") -> list[ReportedGpu]:
    return [gpu(i, host=host, model=model) for i in range(n)]


def sample(uuid: str, ts: datetime, **kw: object) -> GpuSample:
    base: dict[str, object] = {
        "utilization_pct": 50.0,
        "memory_used_mb": 0,
        "temperature_c": 60.0,
        "power_w": 250.0,
        "ecc_uncorrected": 0,
        "xid_errors": 0,
        "process_count": 0,
    }
    base.update(kw)
    return GpuSample(uuid=uuid, ts=ts, **base)  # type: ignore[arg-type]


def report(reported: list[ReportedGpu], samples: list[GpuSample] | None = None, **kw: object) -> HeartbeatReport:
    return HeartbeatReport(gpus=reported, samples=samples or [], **kw)  # type: ignore[arg-type]


async def join_token(db: Database, org_id: UUID, **kw: object) -> str:
    issued = await create_join_token(db, ctx_for(org_id), **kw)  # type: ignore[arg-type]
    return issued.secret


async def register(
    db: Database, org_id: UUID, name: str = "node-1", n: int = 2, **kw: object
) -> tuple[Registration, HostIdentity]:
    secret = await join_token(db, org_id)
    reg = await register_host(db, secret, facts(name), gpus(n, host=name), name=name, **kw)  # type: ignore[arg-type]
    return reg, await authenticate_host(db, reg.credential)


async def db_now(db: Database) -> datetime:
    async with db.system_transaction() as conn:
        value: datetime = await conn.fetchval("select now()")
    return value


async def sql(db: Database, query: str, *args: object) -> None:
    async with db.system_transaction() as conn:
        await conn.execute(query, *args)


async def val(db: Database, query: str, *args: object) -> object:
    async with db.system_transaction() as conn:
        return await conn.fetchval(query, *args)


async def event_types(db: Database, entity_id: UUID) -> list[str]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch("select type from events where entity_id = $1 order by seq", entity_id)
    return [r["type"] for r in rows]
