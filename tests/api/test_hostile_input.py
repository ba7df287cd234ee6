"""Hostile input gets a 4xx problem naming what was wrong, never a 500, and a bounded log."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.agent_helpers import bearer, facts, gpus, join_token, register
from tests.api.conftest import TenantFactory

PROBLEM = "application/problem+json"


def nested(depth: int, leaf: Any = 1) -> str:
    return '{"a":' * depth + json.dumps(leaf) + "}" * depth


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    if field is not None:
        assert field in body["detail"], body
    return body


@pytest.mark.parametrize("path", ["/v1/invites/accept", "/v1/agent/register", "/v1/organizations"])
@pytest.mark.parametrize("depth", [40, 500, 989, 5000])
async def test_deep_json_without_credentials_is_refused_with_a_bounded_log(
    client: httpx.AsyncClient, path: str, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = nested(depth)
    r = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.headers["content-type"].startswith(PROBLEM)
    assert len(r.content) < 4096
    logged = "\n".join(rec.getMessage() + (str(rec.exc_info) if rec.exc_info else "") for rec in caplog.records)
    assert len(caplog.records) <= 3, [rec.getMessage()[:200] for rec in caplog.records]
    assert len(logged) < 2048


async def test_deep_json_in_a_free_form_field_is_refused_naming_the_limit(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t = await tenant()
    body = '{"settings": ' + nested(100) + "}"
    r = await client.patch(
        f"/v1/organizations/{t.org.id}", content=body, headers={**t.headers, "content-type": "application/json"}
    )
    assert_problem(r, 422, "nested")
    # A reasonable depth still works.
    r = await client.patch(
        f"/v1/organizations/{t.org.id}", json={"settings": json.loads(nested(10))}, headers=t.headers
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body",
    [
        '{"\\udc80": 1}',
        '{"token": "0123456789abc", "\\udc80": 1}',
        '{"token": "0123456789abc", "name": "\\ud800"}',
    ],
)
async def test_lone_surrogates_without_credentials_are_422(client: httpx.AsyncClient, body: str) -> None:
    r = await client.post("/v1/invites/accept", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(r, 422)
    assert "\\udc80" in problem["detail"] or "Unicode" in problem["detail"] or "\\ud800" in problem["detail"]


async def test_lone_surrogate_in_label_and_settings_keys_are_422(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    t = await tenant()
    token = await join_token(client, t)
    reg = {"facts": facts(), "gpus": gpus(), "labels": {"\udc80": "x"}}
    raw = json.dumps(reg)  # ensure_ascii: the surrogate travels as the escape \udc80
    r = await client.post(
        "/v1/agent/register", content=raw, headers={**bearer(token), "content-type": "application/json"}
    )
    assert_problem(r, 422, "labels")
    raw = json.dumps({"settings": {"ok": {"\udc80": 1}}})
    r = await client.patch(
        f"/v1/organizations/{t.org.id}", content=raw, headers={**t.headers, "content-type": "application/json"}
    )
    assert_problem(r, 422, "settings.ok")
    r = await client.get(f"/v1/jobs?label={'%ED%B2%80'}=x", headers=t.headers)
    assert r.status_code < 500


@pytest.mark.parametrize("after_seq", [2**31, 2**62, 2**63, -2])
async def test_log_after_seq_beyond_the_column_is_422(
    client: httpx.AsyncClient, tenant: TenantFactory, after_seq: int
) -> None:
    t = await tenant()
    r = await client.post("/v1/jobs", json={"name": "w", "command": ["true"], "gpu_count": 0}, headers=t.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    for path in (f"/v1/jobs/{job_id}/logs", f"/v1/jobs/{job_id}/logs/stream"):
        r = await client.get(path, params={"after_seq": after_seq}, headers=t.headers)
        assert_problem(r, 422, "after_seq")
    r = await client.get(f"/v1/jobs/{job_id}/logs", params={"after_seq": 2**31 - 1}, headers=t.headers)
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/jobs/{job_id}/logs/stream", headers={**t.headers, "Last-Event-ID": f"1:{2**62}"})
    assert_problem(r, 422, "Last-Event-ID")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-01T10:00:00Z"}, "start"),
        ({"end": "0001-01-01T00:30:00Z"}, "end"),
        ({"start": "9999-12-29T00:00:00Z", "end": "9999-12-31T23:59:59-12:00"}, "end"),
        ({"start": "2030-01-01T00:00:00"}, "start"),
    ],
)
async def test_metric_ranges_outside_what_is_stored_are_422(
    client: httpx.AsyncClient, tenant: TenantFactory, params: dict[str, str], field: str
) -> None:
    t = await tenant()
    host = await register(client, t)
    gpu_id = host["gpus"][0]["id"]
    r = await client.get(f"/v1/gpus/{gpu_id}/metrics", params=params, headers=t.headers)
    assert_problem(r, 422, field)


@pytest.mark.parametrize(
    "expires_at", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+01:00", "10000-01-01T00:00:00Z"]
)
async def test_api_key_expiry_outside_what_is_stored_is_422(
    client: httpx.AsyncClient, tenant: TenantFactory, expires_at: str
) -> None:
    t = await tenant()
    r = await client.post("/v1/api-keys", json={"name": "far", "expires_at": expires_at}, headers=t.headers)
    assert_problem(r, 422, "expires_at")
    r = await client.get("/v1/api-keys", headers=t.headers)
    assert r.status_code == 200, r.text


async def test_agent_report_ints_beyond_their_columns_are_422(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t = await tenant()
    host = await register(client, t)
    cred = bearer(host["credential"])
    job = "00000000-0000-0000-0000-000000000001"
    for path, body, field in [
        (f"/v1/agent/jobs/{job}/started", {"attempt": 2**31}, "attempt"),
        (
            f"/v1/agent/jobs/{job}/logs",
            {"attempt": 1, "chunks": [{"seq": 2**31, "stream": "stdout", "offset": 0, "data_b64": ""}]},
            "seq",
        ),
        (
            f"/v1/agent/jobs/{job}/logs",
            {"attempt": 1, "chunks": [{"seq": 0, "stream": "stdout", "offset": 2**63, "data_b64": ""}]},
            "offset",
        ),
    ]:
        r = await client.post(path, json=body, headers=cred)
        assert_problem(r, 422, field)


async def test_a_long_path_makes_a_bounded_access_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpufleet.access")
    r = await client.get("/v1/" + "x" * 20_000)
    assert r.status_code == 404
    lines = [rec for rec in caplog.records if rec.name == "gpufleet.access"]
    assert lines and all(len(rec.getMessage()) < 600 and len(rec.path) <= 512 for rec in lines)  # type: ignore[attr-defined]


async def test_an_unexpected_error_is_one_bounded_log_line_and_a_500_problem(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    @app.get("/boom")
    async def boom() -> None:
        recurse(0)

    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/boom")
    assert_problem(r, 500)
    assert "recurse" not in r.text
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is None and len(errors[0].getMessage()) <= 4200
    assert "RecursionError" in errors[0].getMessage()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_numbers_in_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: TenantFactory, number: str
) -> None:
    t = await tenant()
    raw = '{"settings": {"limits": {"x": [1, ' + number + "]}}}"
    r = await client.patch(
        f"/v1/organizations/{t.org.id}", content=raw, headers={**t.headers, "content-type": "application/json"}
    )
    assert_problem(r, 422, "limits.x[1]")
