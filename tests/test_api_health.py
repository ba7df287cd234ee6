"""Health endpoints and the problem+json convention on the bare app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.api.app import create_app
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.db.setup import DatabaseHandle


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), database=DatabaseHandle(db, None), bootstrap=False, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["migrations"] == "current"


async def test_readyz_reports_pending_migrations(client: httpx.AsyncClient, db: Database) -> None:
    async with db.owner_connection() as conn:
        await conn.execute("delete from schema_migrations where version = (select max(version) from schema_migrations)")
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "migrations" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    r = await client.post("/healthz")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    assert r.headers["content-type"] == "application/problem+json"


async def test_openapi_document_is_served(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert "/healthz" in doc["paths"] and "/readyz" in doc["paths"]


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.get("/nope")
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["gpufleet_http_requests"].samples}
    # By route template, so a path's ids do not make a series each; an unknown path is one series.
    assert requests[("/healthz", "200")] == 1 and requests[("<unmatched>", "404")] == 1
    counts = [s for s in families["gpufleet_http_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["route"] for s in counts} == {"/healthz", "<unmatched>"}
    assert families["gpufleet_db_pool_size"].samples[0].value >= 1
