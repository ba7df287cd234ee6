"""A prediction's own webhook (Replicate's `webhook` and `webhook_events_filter`): start, throttled
output/logs, completed, delivered by the webhooks worker to a real local receiver and signed with
the organization's default secret, which Replicate's client validates."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import replicate
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from gpufleet.background.webhook_delivery import DeliveryWorker
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from tests.api.conftest import Tenant
from tests.execution.helpers import sql
from tests.predictions.helpers import agent, done, push
from tests.predictions.test_predictions_api import model_url
from tests.webhooks.receiver import Receiver

LOCAL = {"webhook_allow_networks": "127.0.0.0/8", "webhook_timeout_s": 2.0}


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return dict(LOCAL)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def worker(db: Database) -> DeliveryWorker:
    return DeliveryWorker(db, Settings(**LOCAL), rng=random.Random(1), owner=f"w{random.random()}")


async def test_prediction_webhooks_are_filtered_throttled_signed_and_in_order(
    client: httpx.AsyncClient, db: Database, owner: Tenant, receiver: Receiver
) -> None:
    await push(db, owner)
    node = await agent(client, db, owner)
    r = await client.post(
        model_url(owner),
        json={
            "input": {"text": "hi"},
            "webhook": receiver.url("/ok"),
            "webhook_events_filter": ["start", "logs", "completed"],
        },
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["webhook"] == receiver.url("/ok") and p["webhook_events_filter"] == ["start", "logs", "completed"]
    (a,) = await node.start_replicas()
    rid = a["replica"]["replica_id"]
    await node.claim([a])
    log = {"prediction_id": p["id"], "replica_id": rid, "type": "logs"}
    await node.events({**log, "text": "1\n"}, {**log, "text": "2\n"})  # the second within 500 ms: coalesced
    await node.events({"prediction_id": p["id"], "replica_id": rid, "type": "output", "item": "x"})  # not in the filter
    await sql(db, "update predictions set webhook_sent_at = now() - interval '1 second'")
    await node.events({**log, "text": "3\n"}, done(p["id"], rid, output="hi"))

    w = worker(db)
    try:
        while (await w.run_once()).claimed:
            pass
    finally:
        await w.aclose()
    bodies = [json.loads(x.body) for x in receiver.requests]
    assert [(b["status"], b["logs"]) for b in bodies] == [
        ("starting", ""),
        ("processing", "1\n"),
        ("processing", "1\n2\n3\n"),
        ("succeeded", "1\n2\n3\n"),
    ]
    assert bodies[-1]["output"] == "hi" and bodies[-1]["urls"]["get"].endswith(p["id"])

    secret = (await client.get("/v1/webhooks/default/secret", headers=owner.headers)).json()["key"]
    assert secret.startswith("whsec_")
    again = (await client.get("/v1/webhooks/default/secret", headers=owner.headers)).json()["key"]
    assert again == secret  # one per organization
    for x in receiver.requests:  # raises unless the signature verifies
        replicate.webhooks.validate(
            headers=x.headers, body=x.body.decode(), secret=WebhookSigningSecret(key=secret), tolerance=300
        )
    forged = receiver.requests[0]
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(
            headers=forged.headers, body=forged.body.decode() + " ", secret=WebhookSigningSecret(key=secret)
        )


async def test_a_webhook_the_ssrf_guard_refuses_is_a_422_before_anything_is_queued(
    client: httpx.AsyncClient, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    r = await client.post(
        model_url(owner), json={"input": {"text": "x"}, "webhook": "http://169.254.169.254/x"}, headers=owner.headers
    )
    assert r.status_code == 422 and r.json()["field"] == "webhook"
    r = await client.post(
        model_url(owner), json={"input": {"text": "x"}, "webhook_events_filter": ["begin"]}, headers=owner.headers
    )
    assert r.status_code == 422
    assert (await client.get("/v1/predictions", headers=owner.headers)).json()["results"] == []
