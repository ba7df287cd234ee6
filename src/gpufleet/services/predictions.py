"""Predictions as use cases: create (validated against the version's schema before anything is
written), read, list (cursor pages), cancel, and wait for the end (``Prefer: wait``).

A prediction is queued in PostgreSQL with the version it must run (the deployment's current one,
or the version asked for) and reaches a ready replica of that version through the agent's claim.
With no live replica of that version, creating it starts one in the same transaction (a cold
start: no autoscaler tick in between). Another organization's prediction is a 404.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.backoff import Backoff
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.models import DIGEST_RE, ModelRecord, VersionRecord
from gpufleet.domain.predictions import Deployment, Prediction, check_webhook_filter
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput
from gpufleet.inference.validate import validate_input
from gpufleet.pagination import decode_cursor, encode_cursor, paginate
from gpufleet.repo import deployments as deployments_repo
from gpufleet.repo import models as models_repo
from gpufleet.repo import prediction_webhooks as hooks_repo
from gpufleet.repo import predictions as repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.services import deployments
from gpufleet.services.lookup import found
from gpufleet.services.models import named_model, owner_slug
from gpufleet.services.prediction_events import predictions_moved
from gpufleet.services.wakeups import WakeHub
from gpufleet.webhooks.signing import SecretBox, new_secret

MAX_WEBHOOK_URL = 2000
SOURCES = ("api", "web", "cli")


@dataclass(frozen=True, slots=True)
class Target:
    """What a prediction runs: exactly one of a version string, a model or a deployment name."""

    version: str | None = None
    model: str | None = None  # owner/name: the model's own deployment, latest version
    deployment: str | None = None  # owner/name

    @property
    def scope(self) -> str:
        """The route's path before ``/predictions``: an ``Idempotency-Key``'s scope."""
        if self.model is not None:
            return f"/v1/models/{self.model}"
        if self.deployment is not None:
            return f"/v1/deployments/{self.deployment}"
        return "/v1"


@dataclass(frozen=True, slots=True)
class NewPrediction:
    input: Any
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    stream: bool = False
    source: str = "api"


@dataclass(frozen=True, slots=True)
class PredictionPage:
    owner: str
    items: list[Prediction]
    next_cursor: str | None
    previous_cursor: str | None


def _split(ref: str, field: str) -> tuple[str, str]:
    owner, _, name = ref.partition("/")
    if not owner or not name or "/" in name:
        raise InvalidInput(f"{field}: {ref!r} is not OWNER/NAME", field=field)
    return owner, name


def _check_webhook(url: str | None) -> str | None:
    if url is None:
        return None
    if not url.startswith(("https://", "http://")) or len(url) > MAX_WEBHOOK_URL or any(c.isspace() for c in url):
        raise InvalidInput("webhook: must be an http(s) URL of at most 2000 characters", field="webhook")
    return url


async def _resolve(
    conn: Conn, org_id: UUID, slug: str, target: Target
) -> tuple[ModelRecord, VersionRecord, Deployment | None]:
    """The model, the version to run and the deployment that runs it (None: the model's own)."""
    if target.deployment is not None:
        d = await deployments.named(conn, org_id, slug, *_split(target.deployment, "deployment"))
        m = await models_repo.get_model_by_id(conn, org_id=org_id, model_id=d.model_id)
        v = await models_repo.get_version(conn, org_id=org_id, version_id=d.version_id)
        assert m is not None and v is not None  # foreign keys
        return m, v, d
    if target.model is not None:
        m = await named_model(conn, org_id, slug, *_split(target.model, "model"))
        latest = m.latest_version_id
        v = await models_repo.get_version(conn, org_id=org_id, version_id=latest) if latest else None
        if v is None:
            raise InvalidInput(f"model {target.model} has no version yet: push one first", field="model")
        return m, v, None
    ref = target.version or ""
    model_ref, colon, digest = ref.rpartition(":")
    if not DIGEST_RE.match(digest):
        raise InvalidInput("version: expected a version id (64 hex digits), or OWNER/NAME:VERSION", field="version")
    model_id = None
    if colon:
        model_id = (await named_model(conn, org_id, slug, *_split(model_ref, "version"))).id
    v = found(
        await models_repo.find_version(conn, org_id=org_id, digest=digest, model_id=model_id), f"version {digest}"
    )
    m = await models_repo.get_model_by_id(conn, org_id=org_id, model_id=v.model_id)
    assert m is not None
    return m, v, None


async def create_in(
    conn: Conn,
    ctx: TenantContext,
    target: Target,
    new: NewPrediction,
    *,
    base_url: str | None = None,
    box: SecretBox | None = None,
) -> Prediction:
    """Queue a prediction (event ``prediction.created``) inside the caller's tenant transaction (an
    idempotent request's, services/idempotency.py); 422 naming the field when the input does not
    fit the version's schema, before anything is written. ``base_url``: the server as the client
    reaches it (``urls``, webhook bodies); ``box`` seals the organization's default webhook secret
    on its first prediction with a ``webhook``."""
    org_id, user_id = ctx.org_id, ctx.user_id
    if new.source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", field="source")
    events_filter = check_webhook_filter(new.webhook_events_filter)
    webhook = _check_webhook(new.webhook)
    slug = await owner_slug(conn, org_id)
    m, v, explicit = await _resolve(conn, org_id, slug, target)
    clean = validate_input(v.openapi_schema, new.input)  # before anything is written
    d = explicit or await deployments.implicit_for(conn, org_id, m, v)
    p = await repo.insert(
        conn,
        org_id=org_id,
        model=f"{slug}/{m.name}",
        version=v.digest,
        version_id=v.id,
        deployment_id=d.id,
        input=clean,
        webhook=webhook,
        webhook_events_filter=events_filter,
        stream=new.stream,
        source=new.source,
        created_by=user_id,
        base_url=base_url,
    )
    if webhook is not None and box is not None:
        await hooks_repo.ensure_default_secret(conn, org_id=org_id, sealed=box.seal(new_secret()))
    await models_repo.add_run(conn, org_id=org_id, model_id=m.id)
    await predictions_moved(conn, [p], actor=ctx.actor)
    await cold_start(conn, d, v, owner=slug, user_id=user_id)
    return p


async def cold_start(conn: Conn, d: Deployment, v: VersionRecord, *, owner: str, user_id: UUID | None) -> bool:
    """With no replica of ``v`` that may still claim, start one now (unless the crash backoff holds
    starts back: the autoscaler starts it when it ends). Whether one was started."""
    org_id = d.organization_id
    if await replicas_repo.has_live(conn, org_id=org_id, deployment_id=d.id, version_id=v.id):
        return False  # the common, warm case: no lock taken
    locked = await deployments_repo.get(conn, org_id=org_id, deployment_id=d.id, lock=True)
    if locked is None or await replicas_repo.has_live(conn, org_id=org_id, deployment_id=d.id, version_id=v.id):
        return False  # another request started one while this one waited for the lock
    if await deployments_repo.backing_off(conn, org_id=org_id, deployment_id=d.id):
        return False
    await deployments.start_replica(conn, locked, v, owner=owner, actor="cold_start", user_id=user_id)
    return True


async def default_secret(db: Database, ctx: TenantContext, box: SecretBox) -> str:
    """The organization's default signing secret (``whsec_...``) of prediction webhooks, made on first use."""
    async with db.transaction(ctx.org_id) as conn:
        sealed = await hooks_repo.ensure_default_secret(conn, org_id=ctx.org_id, sealed=box.seal(new_secret()))
    return box.open(sealed)


async def get(db: Database, ctx: TenantContext, prediction_id: UUID) -> tuple[str, Prediction]:
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        p = found(await repo.get(conn, org_id=org_id, prediction_id=prediction_id), f"prediction {prediction_id}")
        return await owner_slug(conn, org_id), p


async def list_page(db: Database, ctx: TenantContext, *, limit: int, cursor: str | None) -> PredictionPage:
    """Newest first; ``next`` pages to older predictions, ``previous`` back to newer ones."""
    decoded = decode_cursor(cursor, (str, datetime, UUID))
    direction, key = (decoded[0], decoded[1:]) if decoded else ("next", None)
    if direction not in ("next", "prev"):
        raise InvalidInput("cursor: not a cursor returned by this API; start again without it", field="cursor")
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        if direction == "next":
            rows = await repo.page(conn, org_id=org_id, limit=limit, before=key)
            items, nxt = paginate(rows, limit, key=_toward("next"))
            prev = encode_cursor(_toward("prev")(items[0])) if key is not None and items else None
        else:  # the rows just newer than the key, newest first: the page is the oldest ``limit`` of them
            rows = await repo.page(conn, org_id=org_id, limit=limit, after=key)
            oldest_first, prev = paginate(rows[::-1], limit, key=_toward("prev"))
            items = oldest_first[::-1]
            nxt = encode_cursor(_toward("next")(items[-1])) if items else None
    return PredictionPage(slug, items, nxt, prev)


def _toward(direction: str) -> Callable[[Prediction], tuple[str, datetime, UUID]]:
    """The key of a cursor that pages on from a prediction: ``next`` to older ones, ``prev`` to newer."""
    return lambda p: (direction, p.created_at, p.id)


async def cancel(db: Database, ctx: TenantContext, prediction_id: UUID) -> tuple[str, Prediction]:
    """Queued: canceled at once. Processing: ``cancel_requested``, and the replica's agent is told
    through its next claim reply; the prediction ends ``canceled`` when the worker stops it.
    Finished: returned unchanged."""
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        slug = await owner_slug(conn, org_id)
        p = found(
            await repo.get(conn, org_id=org_id, prediction_id=prediction_id, lock=True), f"prediction {prediction_id}"
        )
        if p.done:
            return slug, p
        canceled = await repo.cancel_queued(conn, org_id=org_id, prediction_id=prediction_id)
        if canceled is not None:
            await predictions_moved(conn, [canceled], actor=ctx.actor)
            return slug, canceled
        await repo.request_cancel(conn, org_id=org_id, prediction_id=prediction_id)
        now = await repo.get(conn, org_id=org_id, prediction_id=prediction_id)
        assert now is not None
        return slug, now


async def wait(
    db: Database, ctx: TenantContext, prediction_id: UUID, timeout_s: float, *, hub: WakeHub | None
) -> tuple[str, Prediction]:
    """The prediction once finished, or as it is after ``timeout_s``. Sleeps on the change
    notification of this prediction (the hub); without a hub, re-reads with a backoff."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    if hub is None:
        backoff = Backoff(0.05, cap=1.0)
        while True:
            slug, p = await get(db, ctx, prediction_id)
            left = deadline - time.monotonic()
            if p.done or left <= 0:
                return slug, p
            await asyncio.sleep(min(backoff.next(), left))
    with hub.subscribe("prediction", prediction_id) as sub:  # before the read: no lost wake-up
        while True:
            slug, p = await get(db, ctx, prediction_id)
            left = deadline - time.monotonic()
            if p.done or left <= 0 or hub.draining:
                return slug, p
            await sub.wait(left)
