"""The API documents itself offline: /docs and /redoc load only same-origin assets; the OpenAPI
document has readable operation ids, security schemes and problem+json errors."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
READABLE_ID = re.compile(r"^[a-z]+(_[a-z]+)*$")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_same_origin_assets(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    html = r.text
    urls = ASSET.findall(html)
    assert urls, html
    scripts = re.findall(r"<script[^>]*\bsrc=", html)
    assert scripts, "the page loads no script at all"
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    assert "cdn" not in html.lower() and "fonts.googleapis" not in html
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    # The page points at the document it renders.
    assert "/openapi.json" in html


async def _doc(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


async def test_operation_ids_are_unique_and_readable(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))
    for op_id in ids:
        assert READABLE_ID.match(op_id) and "_v1_" not in op_id and len(op_id) <= 40, op_id
    by_route = {(path, method): op["operationId"] for path, method, op in _operations(doc)}
    assert by_route[("/v1/jobs", "post")] == "jobs_submit"
    assert by_route[("/v1/jobs/{job_id}", "get")] == "jobs_get"
    assert by_route[("/v1/api-keys", "post")] == "api_keys_create"
    assert by_route[("/v1/agent/heartbeat", "post")] == "agent_heartbeat"


async def test_every_operation_has_a_tag_and_its_credential(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert {"apiKey", "joinToken", "hostCredential"} <= set(schemes)
    declared = {t["name"] for t in doc["tags"]}
    for path, method, op in _operations(doc):
        assert op.get("tags") and set(op["tags"]) <= declared, (path, method)
        if "x-permission" in op:
            assert op["security"] == [{"apiKey": []}], (path, method)
    ops = {(p, m): op for p, m, op in _operations(doc)}
    assert ops[("/v1/agent/register", "post")]["security"] == [{"joinToken": []}]
    assert ops[("/v1/agent/assignments", "get")]["security"] == [{"hostCredential": []}]
    assert "security" not in ops[("/healthz", "get")]


async def test_errors_are_documented_as_problem_json(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, method, op in _operations(doc):
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (path, method, code)
        if path.startswith("/v1/"):
            assert {"422", "503"} <= set(op["responses"]) or method == "get", (path, method)
            assert "503" in op["responses"], (path, method)
            if method in ("post", "put", "patch", "delete"):
                assert "409" in op["responses"], (path, method)
    detail = doc["paths"]["/v1/jobs"]["post"]["responses"]["422"]["content"]["application/problem+json"]
    assert detail["schema"]["$ref"] == "#/components/schemas/ValidationProblem"
