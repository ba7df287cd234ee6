"""The access log: one line per request, as JSON lines when asked, carrying the request id."""

from __future__ import annotations

import io
import json
import logging

import httpx

from gpufleet.observability import JsonFormatter, RequestIdFilter, request_id_var


async def test_json_access_lines_carry_the_request_id_and_the_answer(client: httpx.AsyncClient) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("gpufleet.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        await client.post("/v1/jobs", content=b"x" * (2 * 1024 * 1024), headers={"X-Request-ID": "big-1"})
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["request_id"], d["method"], d["path"], d["status"]) for d in lines] == [
        ("abc-123", "GET", "/healthz", 200),
        ("big-1", "POST", "/v1/jobs", 413),
    ]
    assert all(d["logger"] == "gpufleet.access" and d["client"] == "203.0.113.7" for d in lines)
    assert all(isinstance(d["duration_ms"], float) for d in lines)
    assert request_id_var.get() == "-"  # reset once the request is over


def test_a_record_outside_a_request_says_so() -> None:
    record = logging.LogRecord("gpufleet.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    RequestIdFilter().filter(record)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "hello there" and doc["level"] == "warning" and doc["request_id"] == "-"
