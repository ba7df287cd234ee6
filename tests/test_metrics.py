"""/metrics through prometheus-client: the bearer token, several workers counting as one, and what a
scheduler cycle records."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.config import Settings
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.observability import ServerMetrics
from gpufleet.scheduler.service import Scheduler
from tests.api.conftest import Tenant, build_app
from tests.factories import create_host, create_job
from tests.liveserver import LiveServer, free_port
from tests.pg import PgServer


def _samples(text: str, family: str) -> list[tuple[dict[str, str], float]]:
    for f in text_string_to_metric_families(text):
        if f.name == family:
            return [(s.labels, s.value) for s in f.samples]
    raise AssertionError(f"{family} missing from /metrics")


async def test_metrics_token_is_required_when_set(db: Database) -> None:
    app = build_app(db, metrics_token="scrape-me")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get("/metrics")
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
            assert "GPUFLEET_METRICS_TOKEN" in r.json()["detail"]
            assert (await c.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
            r = await c.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert _samples(r.text, "gpufleet_scheduler_leader") == [({}, 0.0)]  # no scheduler in this app


async def test_several_workers_count_every_request_once(
    pg_server: PgServer, db_name: str, db: Database, owner: Tenant, tmp_path: Path
) -> None:
    await create_host(db, owner.org.id, name="gpu-a")  # 2 GPUs for the fleet gauges
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUFLEET_", "PROMETHEUS_"))}
    env |= {
        "GPUFLEET_DATABASE_URL": pg_server.dsn(db_name),
        "GPUFLEET_DATABASE_RUNTIME_URL": pg_server.dsn(db_name, user=RUNTIME_ROLE),
        "GPUFLEET_DATA_DIR": str(tmp_path / "data"),
        "GPUFLEET_CONFIG_DIR": str(tmp_path / "config"),
        "GPUFLEET_METRICS_FLEET_INTERVAL_S": "0.3",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_stale.db").write_bytes(b"left by an earlier run")
    gpufleet = str(Path(sys.executable).parent / "gpufleet")
    proc = await asyncio.create_subprocess_exec(
        gpufleet, "server", "--workers", "2", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            deadline = time.monotonic() + 60
            while True:
                if proc.returncode is not None:
                    raise AssertionError(await proc.stderr.read() if proc.stderr else b"")
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.2)
        n = 30
        for _ in range(n):  # a new connection each time: both workers answer some
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                assert (await c.get("/readyz")).status_code == 200
        deadline = time.monotonic() + 30
        scrapes: list[str] = []
        while len(scrapes) < 6:
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                text = (await c.get("/metrics")).text
            leaders = sum(v for _, v in _samples(text, "gpufleet_scheduler_leader"))
            if leaders == 1 and any(f.name == "gpufleet_fleet_gpus" for f in text_string_to_metric_families(text)):
                scrapes.append(text)
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        for text in scrapes:
            # Whichever worker answered, it counted every worker's requests, each once.
            ready = [v for labels, v in _samples(text, "gpufleet_http_requests") if labels["route"] == "/readyz"]
            assert ready == [n], ready
            # The fleet once, from the leading worker (directly or through its file).
            assert sum(v for _, v in _samples(text, "gpufleet_fleet_gpus")) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_scheduler_cycle_is_observed(db: Database, owner: Tenant) -> None:
    metrics = ServerMetrics()
    await create_host(db, owner.org.id, name="gpu-b")
    placed = await create_job(db, owner.org.id, gpu_count=1)
    never = await create_job(db, owner.org.id, gpu_count=64)  # no host could ever hold it
    result = await Scheduler(db, Settings(), metrics=metrics).run_once()
    assert result.placed_job_ids == (placed.id,) and result.allocation_failed == 1, (result, never.id)
    text = metrics.exposition().decode()
    values = {
        (n, tuple(sorted(labels.items()))): v
        for f in text_string_to_metric_families(text)
        for n, labels, v, *_ in f.samples
    }
    assert values[("gpufleet_scheduler_cycles_total", ())] == 1
    assert values[("gpufleet_scheduler_placements_total", ())] == 1
    assert values[("gpufleet_jobs_allocation_failed_total", ())] == 1
    assert values[("gpufleet_scheduler_cycle_duration_seconds_count", ())] == 1
    assert values[("gpufleet_job_placement_wait_seconds_count", ())] == 1
    assert values[("gpufleet_scheduler_decision_seconds_count", ())] >= 1


async def test_gpufleet_agent_serves_its_metrics_port(live: LiveServer, owner: Tenant, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=owner.headers, timeout=10) as api:
        token = (await api.post("/v1/join-tokens", json={})).json()["token"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | {"GPUFLEET_JOIN_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gpufleet"), "agent", "--server", live.url, "--simulate", "1xA100-80GB",
        "--name", "metrics-agent", "--state-dir", str(tmp_path / "agent"), "--interval", "0.5",
        "--metrics-port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                raise AssertionError(await proc.stderr.read() if proc.stderr else b"")
            try:
                async with httpx.AsyncClient(timeout=5) as c:
                    text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
                accepted = _samples(text, "gpufleet_agent_heartbeats_accepted")
                if accepted and accepted[0][1] > 0 and _samples(text, "gpufleet_agent_gpu_utilization_percent"):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the agent's /metrics did not come up"
            await asyncio.sleep(0.2)
        assert _samples(text, "gpufleet_agent_gpus") == [({}, 1.0)]
        ((labels, _),) = _samples(text, "gpufleet_agent_gpu_utilization_percent")
        assert labels["gpu"] == "0" and labels["model"] == "A100-80GB" and labels["uuid"].startswith("GPU-")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
