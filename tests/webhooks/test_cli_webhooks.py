"""From the CLI, against a real server with its delivery worker: create a webhook to a local receiver,
submit a job, and the receiver gets signed `job.*` deliveries that `standardwebhooks` verifies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from typer.testing import CliRunner

from gpufleet.cli.common import console
from gpufleet.cli.main import app
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer
from tests.webhooks.conftest import LOCAL
from tests.webhooks.receiver import Receiver


@pytest.fixture
def live(pg_server: PgServer, db_name: str) -> Iterator[LiveServer]:
    server = LiveServer(
        pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), settings=dict(LOCAL), background=True
    )
    server.start()
    yield server
    server.stop()


async def test_the_quickstart_from_the_cli(
    live: LiveServer, db: Database, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner: Tenant = await make_tenant(db, Role.OWNER)
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(console, "width", 220)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.stdout + result.stderr
        return result.stdout

    created = json.loads(run("webhooks", "create", receiver.url("/ok"), "--event", "job.*", "--json"))
    secret = created["secret"]
    assert "whsec_" in run("webhooks", "rotate-secret", created["id"], "--overlap-s", "60")
    listed = run("webhooks", "list")
    assert created["id"][:8] in listed and "job.*" in listed  # a short id that works, as below
    assert created["id"] in run("webhooks", "list", "--wide")
    job = json.loads(run("jobs", "submit", "--name", "hooked", "--json", "--", "true"))
    deadline = time.monotonic() + 20
    while not any(job["id"].encode() in r.body for r in receiver.requests):
        assert time.monotonic() < deadline, "no delivery for the job"
        await asyncio.sleep(0.05)
    got = next(r for r in receiver.requests if job["id"].encode() in r.body)
    payload = Verifier(secret).verify(got.body, got.headers)  # the pre-rotation secret still verifies
    assert payload["type"].startswith("job.") and payload["data"]["entity_id"] == job["id"]
    history = run("webhooks", "deliveries", created["id"])
    assert "succeeded" in history and "job." in history
    ping = json.loads(run("webhooks", "test", created["id"], "--json"))
    assert ping["event_type"] == "webhook.test"
    assert "disabled by an admin" in run("webhooks", "update", created["id"], "--disable")
    assert "no" in run("webhooks", "show", created["id"][:6])  # any unique start of the id
    run("webhooks", "delete", created["id"])
