"""The SDK against a live server: Client() finds what the CLI finds, typed errors, the async client."""

from __future__ import annotations

import asyncio
import os
import tomllib
import uuid
from pathlib import Path

import httpx
import pytest

from gpufleet.cli import config as cli_config
from gpufleet.db.pool import Database
from gpufleet.domain.jobs import JobStatus
from gpufleet.domain.tenancy import Role
from gpufleet.sdk import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    GpufleetError,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from gpufleet.sdk.config import save
from gpufleet.sdk.errors import InvalidTransition, ServiceUnavailable, error_class
from tests.api.conftest import Tenant, make_tenant
from tests.api.test_jobs_api import finish
from tests.factories import create_host
from tests.liveserver import LiveServer
from tests.scheduling.helpers import scheduler


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("GPUFLEET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg" / "config.toml"


def test_the_config_file_is_real_toml_whatever_the_key(no_env: Path) -> None:
    path = save('http://h:1/"x"', 'k"ey\\with\nodd')  # an f-string would have written broken TOML
    assert path == no_env and tomllib.loads(path.read_text()) == {"url": 'http://h:1/"x"', "api_key": 'k"ey\\with\nodd'}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert cli_config.load().api_key == 'k"ey\\with\nodd'


async def test_client_with_no_arguments_reads_the_environment_then_the_config_file(
    live: LiveServer, owner: Tenant, no_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(live.url, owner.key)
    with Client() as gf:  # the config file only, as the CLI after `gpufleet up`
        assert gf.url == live.url and gf.me().organization_id == owner.org.id
    monkeypatch.setenv("GPUFLEET_API_KEY", "gfk_not_a_key")  # the environment wins over the file
    with Client() as gf, pytest.raises(Unauthorized) as exc:
        gf.me()
    assert exc.value.status == 401 and isinstance(exc.value, GpufleetError)
    with Client(api_key=owner.key) as gf:  # an argument wins over both
        assert gf.me().user.id == owner.user.id


async def test_typed_errors(live: LiveServer, owner: Tenant, db: Database) -> None:
    viewer = await make_tenant(db, Role.VIEWER, owner.org)
    await create_host(db, owner.org.id)
    with Client(live.url, owner.key) as gf:
        with pytest.raises(NotFound) as nf:
            gf.get_job(uuid.uuid4())
        assert (nf.value.status, nf.value.title) == (404, "Not Found") and nf.value.detail
        with pytest.raises(ValidationFailed) as bad:
            gf.submit_job(name="x", command=["true"], gpu_count=65)
        assert "gpu_count" in (bad.value.detail or "") and bad.value.errors
        job = gf.submit_job(name="x", command=["true"], gpu_count=0)
        await scheduler(db).run_once()
        await finish(db, owner.org.id, str(job.id), JobStatus.SUCCEEDED)
        with pytest.raises(Conflict) as conflict:  # it already finished
            gf.cancel_job(job.id)
        assert conflict.value.status == 409
    with Client(live.url, viewer.key) as gf, pytest.raises(Forbidden):
        gf.submit_job(name="x", command=["true"])
    # one class per problem type; a 409's title picks the narrower class
    assert error_class(409, "Invalid State Transition") is InvalidTransition
    assert error_class(429, "Too Many Requests") is RateLimited
    assert error_class(503, "Service Unavailable") is ServiceUnavailable
    assert error_class(404, "Invalid State Transition") is NotFound


async def test_the_async_client(live: LiveServer, owner: Tenant) -> None:
    async with AsyncClient(live.url, owner.key) as gf:
        job = await gf.submit_job(name="a", command=["true"], gpu_count=0, model_type="text")
        assert (await gf.get_job(job.id)).model_type == "text"
        assert [j.id async for j in gf.list_jobs()] == [job.id]
        found = await gf.resolve("job", job.id.hex[:6])
        assert [m.id for m in found.matches] == [job.id]
        waited = await gf.wait_job(job.id, timeout_s=0.1)
        assert waited.status == "pending"
        cancelled = await gf.cancel_job(job.id)
        assert cancelled.status == "cancelled" and (await gf.job_events(job.id))[-1].type == "job.cancelled"
        with pytest.raises(NotFound):
            await gf.get_job(uuid.uuid4())
        both = await asyncio.gather(gf.me(), gf.list_hosts(), gf.fleet_summary())
        assert both[0].organization_id == owner.org.id and both[1] == [] and both[2].hosts_total == 0
        key = await gf.create_api_key("async")
        assert key.id in {k.id for k in await gf.list_api_keys()}
        assert (await gf.revoke_api_key(key.id)).revoked_at is not None
        feed = await gf.events(after_seq=0)
        assert "job.cancelled" in [e.type for e in feed.events]


def _prediction_server(statuses: list[str], seen: list[str]) -> httpx.MockTransport:
    """A transport (for either client) answering GET /v1/predictions/p1 with ``statuses`` in turn (the last repeats)."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        status = statuses[min(len(seen), len(statuses)) - 1]
        body = {"id": "p1", "model": "o/m", "version": None, "input": {}, "status": status,
                "created_at": "2026-01-01T00:00:00Z", "urls": {}}  # fmt: skip
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


async def test_both_clients_wait_for_a_prediction_alike() -> None:
    seen: list[str] = []
    server = _prediction_server(["starting", "processing", "succeeded"], seen)
    with Client("http://gf", "k", transport=server) as gf:
        assert gf.wait_prediction("p1", timeout_s=30).status == "succeeded"
    assert seen == ["GET /v1/predictions/p1"] * 3
    seen.clear()
    async with AsyncClient("http://gf", "k", transport=server) as agf:
        assert (await agf.wait_prediction("p1", timeout_s=30)).status == "succeeded"
    assert seen == ["GET /v1/predictions/p1"] * 3
    seen.clear()
    # no time left: the first read, as it is
    with Client("http://gf", "k", transport=server) as gf:
        assert gf.wait_prediction("p1", timeout_s=0).status == "starting"
    assert len(seen) == 1
