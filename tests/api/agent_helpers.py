"""Bodies and calls of the agent protocol, for the API tests (what a real agent would send)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gpufleet.db.pool import Database
from tests.api.conftest import Tenant
from tests.scheduling.helpers import scheduler


def facts(hostname: str = "node-1", **kw: Any) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "os": "Linux 6.1",
        "kernel": "6.1.0",
        "arch": "x86_64",
        "cpu_cores": 64,
        "ram_mb": 512 * 1024,
        "agent_version": "0.1.0",
        "simulated": True,
        **kw,
    }


def gpus(name: str = "node-1", n: int = 2, model: str = "A100-80GB") -> list[dict[str, Any]]:
    return [
        {"uuid": f"GPU-{name}-{i}", "index": i, "model": model, "memory_mb": 81920, "simulated": True} for i in range(n)
    ]


def series(uuid: str, n: int = 3, *, start: datetime | None = None, **columns: list[Any]) -> dict[str, Any]:
    """``n`` one-second samples of one GPU, ending now; columns override the defaults."""
    start = start or datetime.now(UTC) - timedelta(seconds=n)
    body: dict[str, Any] = {
        "uuid": uuid,
        "ts": [(start + timedelta(seconds=i)).isoformat() for i in range(n)],
        "utilization_pct": [50.0 + i for i in range(n)],
        "memory_used_mb": [0] * n,
        "temperature_c": [60.0] * n,
        "power_w": [250.0] * n,
        "ecc_uncorrected": [0] * n,
        "xid_errors": [0] * n,
        "process_count": [0] * n,
    }
    body.update(columns)
    return body


async def join_token(client: httpx.AsyncClient, t: Tenant, **body: Any) -> str:
    r = await client.post("/v1/join-tokens", json=body, headers=t.headers)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def register(
    client: httpx.AsyncClient, t: Tenant, name: str = "node-1", n: int = 2, **extra: Any
) -> dict[str, Any]:
    """Register a host through /v1/agent/register; the answer (credential included)."""
    token = await join_token(client, t)
    body = {"name": name, "facts": facts(name), "gpus": gpus(name, n), **extra}
    r = await client.post("/v1/agent/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    reply: dict[str, Any] = r.json()
    return reply


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def heartbeat(
    client: httpx.AsyncClient, credential: str, name: str = "node-1", n: int = 2, samples: int = 0, **body: Any
) -> httpx.Response:
    payload: dict[str, Any] = {"gpus": gpus(name, n)}
    if samples:
        payload["metrics"] = [series(f"GPU-{name}-{i}", samples) for i in range(n)]
    payload.update(body)
    return await client.post("/v1/agent/heartbeat", json=payload, headers=bearer(credential))


# ------------------------------------------------------------------------------ running work


async def placed_job(client: httpx.AsyncClient, t: Tenant, db: Database, **spec: Any) -> str:
    """Submit a one-GPU job through the API and let one scheduler cycle place it; its id."""
    r = await client.post("/v1/jobs", json={"name": "work", "command": ["train"], **spec}, headers=t.headers)
    assert r.status_code == 201, r.text
    await scheduler(db).run_once()
    job_id: str = r.json()["id"]
    return job_id


async def started(client: httpx.AsyncClient, credential: str, job_id: str, attempt: int = 1) -> httpx.Response:
    body = {"attempt": attempt, "pid": 4242}
    return await client.post(f"/v1/agent/jobs/{job_id}/started", json=body, headers=bearer(credential))


async def exited(
    client: httpx.AsyncClient, credential: str, job_id: str, attempt: int = 1, status: str = "succeeded", **kw: Any
) -> httpx.Response:
    body = {"attempt": attempt, "status": status, "exit_code": 0 if status == "succeeded" else None, **kw}
    return await client.post(f"/v1/agent/jobs/{job_id}/exit", json=body, headers=bearer(credential))


def chunk(seq: int, stream: str, offset: int, data: bytes) -> dict[str, Any]:
    return {"seq": seq, "stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode()}


async def upload(
    client: httpx.AsyncClient, credential: str, job_id: str, chunks: list[dict[str, Any]], attempt: int = 1
) -> httpx.Response:
    body = {"attempt": attempt, "chunks": chunks}
    return await client.post(f"/v1/agent/jobs/{job_id}/logs", json=body, headers=bearer(credential))
