"""Nothing is lost across kill -9 mid-delivery: a real `gpufleet server` process is killed while it
has deliveries in flight; a new one delivers every event at least once and records every attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpufleet.db.pool import RUNTIME_ROLE, Database
from tests.api.conftest import make_tenant
from tests.liveserver import free_port
from tests.pg import PgServer
from tests.webhooks.receiver import Receiver


def _server(pg: PgServer, db_name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GPUFLEET_DATABASE_URL": pg.dsn(db_name),
        "GPUFLEET_DATABASE_RUNTIME_URL": pg.dsn(db_name, user=RUNTIME_ROLE),
        "GPUFLEET_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "GPUFLEET_WEBHOOK_ENDPOINT_CONCURRENCY": "2",
        "GPUFLEET_WEBHOOK_BATCH_SIZE": "10",
        "GPUFLEET_PORT": str(port),
        "GPUFLEET_CONFIG_DIR": str(log.parent / "config"),
        "GPUFLEET_DATA_DIR": str(log.parent / "data"),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli.main", "server", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not start:\n" + log.read_text())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(slow_s=0.3).start()
    yield r
    r.stop()


async def test_kill_9_mid_delivery_loses_nothing(
    pg_server: PgServer, db_name: str, db: Database, receiver: Receiver, tmp_path: Path
) -> None:
    owner = await make_tenant(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    first = _server(pg_server, db_name, port, log)
    try:
        await asyncio.to_thread(_wait_up, url, first, log)
        async with httpx.AsyncClient(base_url=url, headers=owner.headers) as api:
            r = await api.post("/v1/webhooks", json={"url": receiver.url("/slow"), "event_types": ["job.*"]})
            assert r.status_code == 201, r.text
            hook = r.json()["id"]
            for i in range(30):
                r = await api.post("/v1/jobs", json={"name": f"k{i}", "command": ["true"], "gpu_count": 0})
                assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while len(receiver.requests) < 3:
            assert time.monotonic() < deadline, "no delivery arrived"
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    async with db.system_transaction() as conn:
        in_flight = await conn.fetchval("select count(*) from webhook_deliveries where status = 'delivering'")
        # The dead replica's leases would end on their own (timeout x rounds + 30 s); end them now
        # instead of sleeping through them.
        await conn.execute("update webhook_deliveries set lease_expires_at = now() where status = 'delivering'")
    assert in_flight > 0, "the kill did not land mid-delivery"
    second = _server(pg_server, db_name, port, log)
    try:
        await asyncio.to_thread(_wait_up, url, second, log)
        deadline = time.monotonic() + 60
        while True:
            async with db.system_transaction() as conn:
                open_ = await conn.fetchval(
                    "select count(*) from webhook_deliveries where webhook_id = $1 and status <> 'succeeded'", hook
                )
            if open_ == 0:
                break
            assert time.monotonic() < deadline, f"{open_} deliveries still open:\n{log.read_text()[-3000:]}"
            await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
    async with db.system_transaction() as conn:
        expected = await conn.fetch(
            """select e.id, d.id as delivery from events e
                 left join webhook_deliveries d on d.event_id = e.id and d.webhook_id = $2
                where e.organization_id = $1 and e.type like 'job.%' and e.created_at >= (
                      select created_at from webhooks where id = $2)""",
            owner.org.id,
            hook,
        )
        attempts = await conn.fetchval("select count(*) from webhook_attempts where webhook_id = $1", hook)
    assert len(expected) >= 30 and all(r["delivery"] is not None for r in expected)
    received = {r.headers["webhook-id"] for r in receiver.requests}
    assert {f"msg_{r['delivery']}" for r in expected} <= received  # every event delivered at least once
    assert attempts >= len(expected)
