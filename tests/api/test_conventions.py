"""Conventions every endpoint shares: body limits, rate limits across replicas, 5xx without internals."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI

from gpufleet.db.pool import Database
from gpufleet.domain.models import VersionInfo, VersionRecord
from gpufleet.domain.tenancy import Role
from gpufleet.schemas.common import vars_of
from tests.api.conftest import Tenant, TenantFactory, build_app
from tests.api.test_tenancy_api import assert_problem


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"max_body_bytes": 2048, "rate_limit_key_per_minute": 5, "rate_limit_ip_per_minute": 0}


async def test_oversized_bodies_get_413_and_change_nothing(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    big = {"name": "x", "settings": {"blob": "y" * 5000}}
    r = await client.patch(f"/v1/organizations/{t.org.id}", json=big, headers=t.headers)
    assert_problem(r, 413)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1024

    # No Content-Length: the limit is enforced while the body streams in.
    r = await client.patch(
        f"/v1/organizations/{t.org.id}", content=chunks(), headers={**t.headers, "content-type": "application/json"}
    )
    assert_problem(r, 413)
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select settings from organizations where id = $1", t.org.id) == {}


async def test_rate_limit_per_key_with_headers(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    other: Tenant = await tenant(Role.OWNER)
    statuses = []
    for _ in range(7):
        r = await client.get("/v1/me", headers=t.headers)
        statuses.append(r.status_code)
        if r.status_code == 200:
            assert int(r.headers["ratelimit-limit"]) == 5 and "ratelimit-remaining" in r.headers
    assert statuses == [200] * 5 + [429] * 2
    assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # Another key is not affected.
    assert (await client.get("/v1/me", headers=other.headers)).status_code == 200


async def test_rate_limit_holds_across_replicas(db: Database, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    settings = {"rate_limit_key_per_minute": 6, "rate_limit_ip_per_minute": 0}
    a, b = build_app(db, **settings), build_app(db, **settings)
    async with a.router.lifespan_context(a), b.router.lifespan_context(b):
        ca = httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://a")
        cb = httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://b")
        async with ca, cb:
            for _ in range(4):
                assert (await ca.get("/v1/me", headers=t.headers)).status_code == 200
            assert (await cb.get("/v1/me", headers=t.headers)).status_code == 200
            await a.state.gpufleet.limiter.sync()
            await b.state.gpufleet.limiter.sync()
            await a.state.gpufleet.limiter.sync()
            # Each replica now knows of the other's requests: 5 of 6 are used, in total.
            assert [(await cb.get("/v1/me", headers=t.headers)).status_code for _ in range(2)] == [200, 429]
            await b.state.gpufleet.limiter.sync()
            await a.state.gpufleet.limiter.sync()
            assert (await ca.get("/v1/me", headers=t.headers)).status_code == 429


async def test_rate_limit_per_address(db: Database, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    app: FastAPI = build_app(db, rate_limit_ip_per_minute=3, rate_limit_key_per_minute=0)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            got = [(await c.get("/v1/me", headers=t.headers)).status_code for _ in range(4)]
            assert got == [200, 200, 200, 429]
            assert (await c.get("/healthz")).status_code == 200  # health checks are not limited


async def test_wrong_method_lists_allowed_ones(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    r = await client.put("/v1/members", headers=t.headers)
    assert_problem(r, 405)
    assert "GET" in r.headers["allow"]


async def test_unexpected_errors_are_500_problems_without_internals(db: Database, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    app = build_app(db)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail: password=hunter2")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/v1/boom", headers=t.headers)
    assert_problem(r, 500)
    assert "hunter2" not in r.text and "RuntimeError" not in r.text


def test_a_response_read_from_a_record_gets_its_inherited_fields_too():
    """``vars_of`` reads every dataclass field, the base class's included: a record that extends
    another (a version extends its archive's facts) loses none of them on the way to the wire."""

    info = VersionInfo("predict.py:Predictor", {}, {}, [], "3.11", True, False, None)
    record = VersionRecord(
        **dataclasses.asdict(info),
        id=uuid4(),
        organization_id=uuid4(),
        model_id=uuid4(),
        model_name="m",
        digest="d" * 64,
        archive_size=1,
        created_by=None,
        created_at=datetime.now(UTC),
    )
    read = vars_of(record)
    assert set(read) == {f.name for f in dataclasses.fields(VersionRecord)}
    assert read["predict_ref"] == "predict.py:Predictor" and read["digest"] == "d" * 64
