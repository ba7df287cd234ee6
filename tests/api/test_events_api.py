"""The change feed: events after a position, long-polled, one organization's only."""

from __future__ import annotations

import asyncio
import time

import httpx

from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory

JOB = {"name": "feed", "command": ["true"], "gpu_count": 0}


async def test_feed_from_now_then_new_events(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    a: Tenant = await tenant(Role.MEMBER)
    b: Tenant = await tenant(Role.MEMBER)
    await client.post("/v1/jobs", json=JOB, headers=a.headers)
    start = (await client.get("/v1/events", params={"after_seq": -1}, headers=a.headers)).json()
    assert start["events"] == [] and start["last_seq"] > 0
    job = (await client.post("/v1/jobs", json=JOB, headers=a.headers)).json()
    page = (await client.get("/v1/events", params={"after_seq": start["last_seq"]}, headers=a.headers)).json()
    assert [(e["entity_type"], e["entity_id"]) for e in page["events"]] == [("job", job["id"])]
    assert page["last_seq"] == page["events"][-1]["seq"] > start["last_seq"]
    # Another organization sees none of it.
    other = (await client.get("/v1/events", params={"after_seq": 0}, headers=b.headers)).json()
    assert other["events"] and all(e["entity_type"] != "job" for e in other["events"])
    assert job["id"] not in {e["entity_id"] for e in other["events"]}


async def test_long_poll_answers_when_an_event_arrives(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    a: Tenant = await tenant(Role.MEMBER)
    position = (await client.get("/v1/events", params={"after_seq": -1}, headers=a.headers)).json()["last_seq"]

    async def submit_later() -> None:
        await asyncio.sleep(0.3)
        await client.post("/v1/jobs", json=JOB, headers=a.headers)

    started = time.monotonic()
    task = asyncio.create_task(submit_later())
    r = await client.get("/v1/events", params={"after_seq": position, "wait_s": 10}, headers=a.headers)
    await task
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and len(r.json()["events"]) >= 1
    assert 0.25 <= elapsed < 5
    # Nothing new: the long poll gives up after wait_s with the same position.
    last = r.json()["last_seq"]
    quiet = (await client.get("/v1/events", params={"after_seq": last, "wait_s": 0.2}, headers=a.headers)).json()
    assert quiet == {"events": [], "last_seq": last}


async def test_after_is_the_cursor_too_and_bounds_are_checked(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    a: Tenant = await tenant(Role.MEMBER)
    start = (await client.get("/v1/events", params={"after_seq": -1}, headers=a.headers)).json()["last_seq"]
    job = (await client.post("/v1/jobs", json=JOB, headers=a.headers)).json()
    page = (await client.get("/v1/events", params={"after": start}, headers=a.headers)).json()
    assert [e["entity_id"] for e in page["events"]] == [job["id"]]  # not the whole history again
    both = await client.get("/v1/events", params={"after": start, "after_seq": start + 1}, headers=a.headers)
    assert both.status_code == 422 and "after" in both.text
    old = await client.get("/v1/events", params={"since": "0001-01-01T00:00:00+00:00"}, headers=a.headers)
    assert old.status_code == 422 and "since" in old.text
