"""The delivery worker against a real local receiver: signed deliveries, retries, 410, Retry-After,
timeouts, redirects, leases, SKIP LOCKED claims and disabling an endpoint that keeps failing."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook as Verifier

from gpufleet.background.webhook_delivery import DeliveryWorker
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory
from tests.webhooks.conftest import LOCAL
from tests.webhooks.receiver import Receiver

JOB = {"name": "hooked", "command": ["true"], "gpu_count": 0}


def worker(db: Database, **settings: Any) -> DeliveryWorker:
    return DeliveryWorker(db, Settings(**{**LOCAL, **settings}), rng=random.Random(1), owner=f"w{random.random()}")


async def hook(client: httpx.AsyncClient, t: Tenant, url: str, types: list[str] | None = None) -> dict[str, Any]:
    r = await client.post("/v1/webhooks", json={"url": url, "event_types": types or ["job.*"]}, headers=t.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def deliveries(client: httpx.AsyncClient, t: Tenant, hook_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=t.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def backdate(db: Database) -> None:
    """Make every scheduled retry due now (instead of sleeping through the schedule)."""
    async with db.system_transaction() as conn:
        await conn.execute("update webhook_deliveries set next_attempt_at = now() where status in ('pending','failed')")


async def test_signed_job_events_reach_the_receiver(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    created = await hook(client, owner, receiver.url("/ok"), ["job.*"])
    job = (await client.post("/v1/jobs", json=JOB, headers=owner.headers)).json()
    w = worker(db)
    report = await w.run_once()
    await w.aclose()
    assert report.claimed == report.succeeded == 1
    [got] = receiver.requests
    payload = Verifier(created["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "job.submitted" and payload["data"]["entity_id"] == job["id"]
    assert payload["data"]["payload"]["to"] == "pending"
    assert got.headers["webhook-id"].startswith("msg_")
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "succeeded" and d["message_id"] == got.headers["webhook-id"]
    [a] = d["attempts"]
    assert a["status_code"] == 200 and a["address"] == "127.0.0.1" and len(a["response_body"]) == 4096
    assert a["response_headers"]["content-length"]
    # Nothing else was subscribed: a quota change is not a job event.
    await client.put("/v1/quotas", json={"max_gpus": 3}, headers=owner.headers)
    assert (await worker(db).run_once()).claimed == 0


async def test_failures_retry_on_schedule_with_the_same_id(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    receiver.fail_first = 2
    created = await hook(client, owner, receiver.url("/flaky"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    w = worker(db)
    assert (await w.run_once()).failed == 1
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "failed" and d["last_status_code"] == 500
    # The second attempt is due about 5 s later (+-10 %), not at once.
    async with db.system_transaction() as conn:
        wait = await conn.fetchval("select extract(epoch from next_attempt_at - now()) from webhook_deliveries")
    assert 4.0 < wait <= 5.6
    assert (await w.run_once()).claimed == 0
    await backdate(db)
    assert (await w.run_once()).failed == 1
    async with db.system_transaction() as conn:
        wait = await conn.fetchval("select extract(epoch from next_attempt_at - now()) from webhook_deliveries")
    assert 265 < wait <= 331  # 5 min +-10 %
    await backdate(db)
    assert (await w.run_once()).succeeded == 1
    await w.aclose()
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "succeeded" and [a["status_code"] for a in d["attempts"]] == [500, 500, 204]
    assert (await client.get(f"/v1/webhooks/{created['id']}", headers=owner.headers)).json()["failing_since"] is None


async def test_gone_disables_the_endpoint_with_an_event(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    gone = await hook(client, owner, receiver.url("/gone"))
    watcher = await hook(client, owner, receiver.url("/ok"), ["webhook.disabled"])
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    w = worker(db)
    await w.run_once()
    state = (await client.get(f"/v1/webhooks/{gone['id']}", headers=owner.headers)).json()
    assert state["enabled"] is False and "410" in state["disabled_reason"]
    [d] = await deliveries(client, owner, gone["id"])
    assert d["status"] == "dead"
    # The disabled event reaches the other endpoint, and the feed.
    await w.run_once()
    await w.aclose()
    notice = [r for r in receiver.requests if r.path == "/ok"]
    assert len(notice) == 1
    body = Verifier(watcher["secret"]).verify(notice[0].body, notice[0].headers)
    assert body["type"] == "webhook.disabled" and body["data"]["entity_id"] == gone["id"]
    feed = (await client.get("/v1/events", params={"type": "webhook.disabled"}, headers=owner.headers)).json()
    assert [e["entity_id"] for e in feed["events"]] == [gone["id"]]
    # A new job reaches no disabled endpoint; re-enabling resumes it.
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    assert (await worker(db).run_once()).claimed == 0
    r = await client.patch(f"/v1/webhooks/{gone['id']}", json={"enabled": True}, headers=owner.headers)
    assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None


async def test_retry_after_is_honoured_and_bounded(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    await hook(client, owner, receiver.url("/busy"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    receiver.retry_after = "120"
    await worker(db).run_once()
    async with db.system_transaction() as conn:
        wait = await conn.fetchval("select extract(epoch from next_attempt_at - now()) from webhook_deliveries")
    assert 118 < wait <= 120.5  # the receiver's 120 s, not the schedule's 5 s
    receiver.retry_after = "999999"
    await backdate(db)
    await worker(db, webhook_retry_after_max_s=600).run_once()
    async with db.system_transaction() as conn:
        wait = await conn.fetchval("select extract(epoch from next_attempt_at - now()) from webhook_deliveries")
    assert 598 < wait <= 600.5


async def test_a_hanging_receiver_times_out_and_redirects_are_not_followed(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    receiver.hang_s = 3
    hanging = await hook(client, owner, receiver.url("/hang"))
    moved = await hook(client, owner, receiver.url("/redirect"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    started = time.monotonic()
    report = await worker(db, webhook_timeout_s=0.5).run_once()
    assert report.failed == 2 and time.monotonic() - started < 2.5
    [h] = await deliveries(client, owner, hanging["id"])
    assert h["status"] == "failed" and "timed out after 0.5 s" in h["attempts"][0]["error"]
    [m] = await deliveries(client, owner, moved["id"])
    assert m["attempts"][0]["status_code"] == 302 and "redirects are not followed" in m["last_error"]
    assert m["attempts"][0]["response_headers"]["location"] == "/ok"
    assert "/ok" not in receiver.paths()


async def test_a_vanished_worker_is_covered_by_its_lease(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    """Claimed, then the process died before recording: once the lease ends, another worker sends it."""
    owner: Tenant = await tenant(Role.OWNER)
    created = await hook(client, owner, receiver.url("/ok"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    from gpufleet.repo import webhook_deliveries as repo

    async with db.system_transaction() as conn:
        [claim] = await repo.claim(conn, owner="dead-replica", limit=10, per_webhook=10, lease_s=60)
    assert (await worker(db).run_once()).claimed == 0  # leased: nobody else takes it
    async with db.system_transaction() as conn:
        await conn.execute("update webhook_deliveries set lease_expires_at = now() - interval '1 second'")
    report = await worker(db).run_once()
    assert report.reclaimed == 1 and report.succeeded == 1
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "succeeded" and d["id"] == str(claim.delivery.id)


async def test_concurrent_workers_never_send_the_same_delivery(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    await hook(client, owner, receiver.url("/ok"))
    for _ in range(30):
        await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    workers = [worker(db, webhook_batch_size=7, webhook_timeout_s=10) for _ in range(4)]
    claimed = 0
    for _ in range(5):
        claimed += sum(r.claimed for r in await asyncio.gather(*(w.run_once() for w in workers)))
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert claimed == 30 and len(ids) == 30 and len(set(ids)) == 30


async def test_exhausted_retries_give_up_and_a_long_failure_disables(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    created = await hook(client, owner, receiver.url("/fail"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    w = worker(db)
    for _ in range(10):
        await w.run_once()
        await backdate(db)
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "dead" and len(d["attempts"]) == 10
    # Redelivery: a fresh schedule, the same webhook-id.
    r = await client.post(f"/v1/webhooks/{created['id']}/deliveries/{d['id']}/redeliver", headers=owner.headers)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    await w.run_once()
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "failed" and len(d["attempts"]) == 11
    assert len({x.headers["webhook-id"] for x in receiver.requests}) == 1
    # Failing for longer than 5 days: the endpoint is disabled with an event.
    async with db.system_transaction() as conn:
        await conn.execute("update webhooks set failing_since = now() - interval '5 days 1 minute'")
    await backdate(db)
    await w.run_once()
    await w.aclose()
    state = (await client.get(f"/v1/webhooks/{created['id']}", headers=owner.headers)).json()
    assert state["enabled"] is False and "5 days" in state["disabled_reason"]


async def test_delivery_refused_by_the_guard_is_recorded(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database, receiver: Receiver
) -> None:
    """Created while the operator admitted the receiver's network, then the setting changed."""
    owner: Tenant = await tenant(Role.OWNER)
    created = await hook(client, owner, receiver.url("/ok"))
    await client.post("/v1/jobs", json=JOB, headers=owner.headers)
    await worker(db, webhook_allow_networks="").run_once()
    [d] = await deliveries(client, owner, created["id"])
    assert d["status"] == "failed" and "loopback" in d["last_error"] and receiver.requests == []
