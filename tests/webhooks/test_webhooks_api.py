"""/v1/webhooks: admins only, the secret shown once, the SSRF guard at creation, rotation, pings."""

from __future__ import annotations

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


async def test_crud_is_for_admins_and_the_secret_is_shown_once(
    client: httpx.AsyncClient, tenant: TenantFactory, receiver: Receiver
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    other: Tenant = await tenant(Role.OWNER)
    body = {"url": receiver.url("/ok"), "event_types": ["job.*", "host.unreachable"], "description": "ops"}
    assert (await client.post("/v1/webhooks", json=body, headers=member.headers)).status_code == 403
    assert (await client.get("/v1/webhooks", headers=member.headers)).status_code == 403
    r = await client.post("/v1/webhooks", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["enabled"] is True
    one = (await client.get(f"/v1/webhooks/{created['id']}", headers=admin.headers)).json()
    assert "secret" not in one and one["event_types"] == ["job.*", "host.unreachable"]
    listed = (await client.get("/v1/webhooks", headers=admin.headers)).json()
    assert [w["id"] for w in listed["items"]] == [created["id"]] and "secret" not in listed["items"][0]
    # Another organization sees nothing of it (404, never 403).
    assert (await client.get(f"/v1/webhooks/{created['id']}", headers=other.headers)).status_code == 404
    assert (await client.get("/v1/webhooks", headers=other.headers)).json()["items"] == []
    r = await client.patch(
        f"/v1/webhooks/{created['id']}", json={"event_types": ["*"], "enabled": False}, headers=admin.headers
    )
    assert r.json()["event_types"] == ["*"] and r.json()["enabled"] is False
    assert (await client.delete(f"/v1/webhooks/{created['id']}", headers=other.headers)).status_code == 404
    assert (await client.delete(f"/v1/webhooks/{created['id']}", headers=admin.headers)).status_code == 204
    assert (await client.get(f"/v1/webhooks/{created['id']}", headers=admin.headers)).status_code == 404
    feed = (await client.get("/v1/events", params={"type": "webhook"}, headers=admin.headers)).json()["events"]
    assert [e["type"] for e in feed] == ["webhook.created", "webhook.updated", "webhook.deleted"]
    # An administrative event names its user as every other event does (one actor format).
    assert {e["actor"] for e in feed} == {f"user:{admin.user.id}"}


async def test_pagination_uses_the_cursor(client: httpx.AsyncClient, tenant: TenantFactory, receiver: Receiver) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    made = [
        (await client.post("/v1/webhooks", json={"url": receiver.url(f"/ok?{i}")}, headers=admin.headers)).json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        page = (
            await client.get(
                "/v1/webhooks", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=admin.headers
            )
        ).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == made[::-1]


async def test_refusals_name_the_rule(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "link-local"),
        ({"url": "http://10.0.0.8/hook"}, "private"),
        ({"url": "http://[::ffff:192.168.0.1]/"}, "private"),
        ({"url": "http://100.64.1.1/"}, "cgnat"),
        ({"url": "gopher://example.com/"}, "scheme"),
    ]
    for body, rule in cases:
        r = await client.post("/v1/webhooks", json=body, headers=admin.headers)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["rule"] == rule, r.json()
    r = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/", "event_types": ["jobz.*"]}, headers=admin.headers
    )
    assert r.status_code == 422 and "matches no event type" in r.json()["detail"]
    r = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/", "event_types": ["job.**"]}, headers=admin.headers
    )
    assert r.status_code == 422


async def test_ping_rotation_and_overlap(
    client: httpx.AsyncClient, tenant: TenantFactory, receiver: Receiver, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    created = (await client.post("/v1/webhooks", json={"url": receiver.url("/ok")}, headers=admin.headers)).json()
    old = created["secret"]
    rotated = (
        await client.post(
            f"/v1/webhooks/{created['id']}/rotate-secret", json={"overlap_s": 3600}, headers=admin.headers
        )
    ).json()
    new = rotated["secret"]
    assert new != old and rotated["previous_secret_expires_at"] is not None
    r = await client.post(f"/v1/webhooks/{created['id']}/test", headers=admin.headers)
    assert r.status_code == 202 and r.json()["event_type"] == "webhook.test"
    w = DeliveryWorker(db, Settings(**LOCAL), rng=random.Random(3))
    await w.run_once()
    [got] = [x for x in receiver.requests if b"webhook.test" in x.body]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Verifier(new).verify(got.body, got.headers)["type"] == "webhook.test"
    Verifier(old).verify(got.body, got.headers)  # receivers still on the old secret keep working
    # Without overlap the old secret stops at once.
    newest = (
        await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", json={"overlap_s": 0}, headers=admin.headers)
    ).json()["secret"]
    await client.post(f"/v1/webhooks/{created['id']}/test", headers=admin.headers)
    await w.run_once()
    await w.aclose()
    last = receiver.requests[-1]
    assert last.headers["webhook-signature"].count("v1,") == 1
    Verifier(newest).verify(last.body, last.headers)
    history = (
        await client.get(
            f"/v1/webhooks/{created['id']}/deliveries", params={"status": "succeeded"}, headers=admin.headers
        )
    ).json()
    assert {d["event_type"] for d in history["items"]} >= {"webhook.test"}
    one = history["items"][0]
    again = (await client.get(f"/v1/webhooks/{created['id']}/deliveries/{one['id']}", headers=admin.headers)).json()
    assert again["attempts"][0]["status_code"] == 200


async def test_events_api_filters(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    job = {"name": "f", "command": ["true"], "gpu_count": 0}
    a = (await client.post("/v1/jobs", json=job, headers=owner.headers)).json()
    mid = time.time()
    b = (await client.post("/v1/jobs", json=job, headers=owner.headers)).json()
    await client.post(f"/v1/jobs/{a['id']}/cancel", headers=owner.headers)
    await client.put("/v1/quotas", json={"max_gpus": 2}, headers=owner.headers)

    async def types(**params: Any) -> list[tuple[str, str]]:
        r = await client.get("/v1/events", params=params, headers=owner.headers)
        assert r.status_code == 200, r.text
        return [(e["type"], e["entity_id"]) for e in r.json()["events"]]

    jobs_only = await types(type="job.*")
    assert jobs_only and all(t.startswith("job.") for t, _ in jobs_only)
    assert await types(type="job") == jobs_only
    assert await types(type="quota.set") == [("quota.set", (await types(type="quota.set"))[0][1])]
    assert {i for _, i in await types(entity_id=a["id"])} == {a["id"]}
    assert len(await types(entity_id=a["id"])) == 2  # submitted, cancelled
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(mid, UTC).isoformat()
    assert ("job.submitted", a["id"]) not in await types(since=since)
    assert ("job.submitted", b["id"]) in await types(since=since)
    assert ("job.submitted", b["id"]) not in await types(until=since)
    assert (await client.get("/v1/events", params={"type": "job.**"}, headers=owner.headers)).status_code == 422
