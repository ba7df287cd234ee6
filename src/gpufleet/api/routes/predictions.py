"""/v1/predictions, and creating one through a model or a deployment: Replicate's API shapes, so
its official client works against gpufleet (docs/predictions.md). `Prefer: wait[=n]` holds the
answer until the prediction ends (n <= 60 s); `urls.stream` is a server-sent event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gpufleet.api.deps import DB, DEFAULT_LIMIT, NOT_FOUND, Cursor, Limit, Tenant, requires
from gpufleet.api.idempotency import REPLAYED_HEADER, IdempotencyKey
from gpufleet.api.routes.models import base_url, page_urls
from gpufleet.api.state import app_state
from gpufleet.api.state import hub_of as hub_of  # routes/agent_predictions.py imports it from here
from gpufleet.db.pool import Connection, Database
from gpufleet.domain.predictions import Prediction, parse_prefer_wait
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput, NotFound
from gpufleet.schemas.models import CursorPage
from gpufleet.schemas.predictions import PredictionCreate, PredictionRead, WebhookSecretRead
from gpufleet.services import idempotency, prediction_stream, predictions
from gpufleet.services.idempotency import IdempotentRequest
from gpufleet.services.predictions import NewPrediction, Target
from gpufleet.services.webhooks import check_url
from gpufleet.webhooks.signing import SecretBox
from gpufleet.webhooks.ssrf import WebhookRefused

router = APIRouter(prefix="/v1", tags=["predictions"])

CREATED: dict[int, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"description": "a request with the same `Idempotency-Key` is still in progress"},
    402: {"description": "a hard budget has no room for the replica a cold start needs"},
    422: {
        "description": "the input does not fit the version's schema (`field` names it), a bad header, or an "
        "`Idempotency-Key` reused with another body"
    },
}
PreferHeader = Annotated[
    str | None,
    Header(description="`wait` (60 s) or `wait=n` (1-60): answer when the prediction ends, or after n seconds."),
]
SourceHeader = Annotated[str | None, Header(alias="x-gpufleet-source", description="`cli` or `web`; default `api`.")]


def prediction_id_of(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"prediction {raw} not found") from None


@dataclass(frozen=True, slots=True)
class Asking:
    """What every way of creating a prediction reads from the request besides its body and target."""

    request: Request
    db: Database
    ctx: TenantContext
    prefer: str | None
    source: str | None
    idempotency_key: str | None


async def _asking(
    request: Request,
    db: DB,
    ctx: Tenant,
    prefer: PreferHeader = None,
    source: SourceHeader = None,
    idempotency_key: IdempotencyKey = None,
) -> Asking:
    return Asking(request, db, ctx, prefer, source, idempotency_key)


Ask = Annotated[Asking, Depends(_asking)]


async def _create(ask: Ask, body: PredictionCreate, target: Target) -> JSONResponse:
    request, db, ctx, source = ask.request, ask.db, ask.ctx, ask.source
    wait_s = parse_prefer_wait(ask.prefer)
    webhook, events = body.webhook, body.webhook_events_filter
    if webhook is None and body.webhook_completed is not None:
        webhook, events = body.webhook_completed, ["completed"]
    new = NewPrediction(
        input=body.input,
        webhook=webhook,
        webhook_events_filter=list(events) if events is not None else None,
        stream=body.stream,
        source=source or "api",
    )
    settings = app_state(request).settings
    if webhook is not None:
        try:
            await check_url(webhook, settings)
        except WebhookRefused as exc:
            raise InvalidInput(f"webhook: {exc.message}", field="webhook", rule=exc.rule) from exc
    box = SecretBox(settings.secret_key.get_secret_value()) if webhook is not None else None
    scope = f"POST {target.scope}/predictions"
    once = IdempotentRequest.of(scope, ask.idempotency_key, body.model_dump(mode="json"))
    created: list[Prediction] = []

    async def work(conn: Connection) -> Prediction:
        made = await predictions.create_in(conn, ctx, target, new, base_url=base_url(request), box=box)
        created.append(made)
        return made

    reply = await idempotency.once(
        db,
        ctx,
        once,
        work=work,
        # The key remembers which prediction it made; a retry is answered with that prediction now.
        render=lambda made: {"id": str(made.id)},
        status=201,
    )
    if reply.replayed:
        owner, now = await predictions.get(db, ctx, UUID(reply.body["id"]))
    else:  # as the creating transaction read it back: no second read
        now = created[-1]
        owner = now.model.partition("/")[0]  # the model is "<organization slug>/<name>"
    if wait_s is not None and not now.done:
        owner, now = await predictions.wait(db, ctx, now.id, wait_s, hub=hub_of(request))
    read = PredictionRead.of(now, base_url(request), owner, waited=wait_s is not None)
    headers = {"Preference-Applied": f"wait={int(wait_s)}"} if wait_s is not None else {}
    if reply.replayed:
        headers[REPLAYED_HEADER] = "true"
    return JSONResponse(read.model_dump(mode="json"), status_code=201, headers=headers)


@router.post("/predictions", status_code=201, response_model=PredictionRead, **requires("predictions.create", CREATED))
async def create_prediction(body: PredictionCreate, ask: Ask) -> JSONResponse:
    """Run a version: `version` is its id (or `owner/name:version`). Queued for a replica of that
    version (started at once on a cold start); `Prefer: wait` answers when it ends."""
    if body.version is None:
        raise InvalidInput("version: required here (or POST /v1/models/{owner}/{name}/predictions)", field="version")
    return await _create(ask, body, Target(version=body.version))


@router.post(
    "/models/{owner}/{name}/predictions",
    status_code=201,
    response_model=PredictionRead,
    **requires("predictions.create", CREATED),
)
async def create_model_prediction(owner: str, name: str, body: PredictionCreate, ask: Ask) -> JSONResponse:
    """Run the model's latest version on its own deployment (created on first use with the model's
    hardware, 0 to 1 replicas; it follows the latest version)."""
    if body.version is not None:
        raise InvalidInput("version: not taken here; POST /v1/predictions runs a given version", field="version")
    return await _create(ask, body, Target(model=f"{owner}/{name}"))


@router.post(
    "/deployments/{owner}/{name}/predictions",
    status_code=201,
    response_model=PredictionRead,
    **requires("predictions.create", CREATED),
)
async def create_deployment_prediction(owner: str, name: str, body: PredictionCreate, ask: Ask) -> JSONResponse:
    """Run the deployment's current version on its replicas."""
    if body.version is not None:
        raise InvalidInput("version: not taken here; the deployment's release says which", field="version")
    return await _create(ask, body, Target(deployment=f"{owner}/{name}"))


@router.get("/predictions", **requires("predictions.list"))
async def list_predictions(
    ctx: Tenant, db: DB, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CursorPage[PredictionRead]:
    """Newest first; `next` and `previous` are the URLs of the neighbouring pages."""
    page = await predictions.list_page(db, ctx, limit=limit, cursor=cursor)
    base, url = base_url(request), page_urls(request, "/v1/predictions", limit)
    return CursorPage[PredictionRead](
        previous=url(page.previous_cursor),
        next=url(page.next_cursor),
        results=[PredictionRead.of(x, base, page.owner) for x in page.items],
    )


@router.get("/predictions/{prediction_id}", **requires("predictions.read", NOT_FOUND))
async def get_prediction(prediction_id: str, ctx: Tenant, db: DB, request: Request) -> PredictionRead:
    owner, found = await predictions.get(db, ctx, prediction_id_of(prediction_id))
    return PredictionRead.of(found, base_url(request), owner)


@router.post("/predictions/{prediction_id}/cancel", **requires("predictions.cancel", NOT_FOUND))
async def cancel_prediction(prediction_id: str, ctx: Tenant, db: DB, request: Request) -> PredictionRead:
    """Queued: `canceled` at once. Processing: its worker is told to stop it; it ends `canceled`.
    Finished: returned unchanged."""
    owner, found = await predictions.cancel(db, ctx, prediction_id_of(prediction_id))
    return PredictionRead.of(found, base_url(request), owner)


@router.get(
    "/predictions/{prediction_id}/stream",
    response_class=StreamingResponse,
    **requires(
        "predictions.read",
        {**NOT_FOUND, 200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    ),
)
async def stream_prediction(
    prediction_id: str,
    ctx: Tenant,
    db: DB,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
    keepalive_s: Annotated[float, Query(ge=1, le=60, description="A comment line this often while idle.")] = 15.0,
) -> StreamingResponse:
    """Server-sent events as Replicate sends them: `output` (one per item; text as is, else JSON),
    `logs` (one per line), `error` (`{"detail": ...}`), then `done` (`{}`, `{"reason": "canceled"}`
    or `{"reason": "error"}`). Each has an `id`; send it back as `Last-Event-ID` to resume."""
    pid = prediction_id_of(prediction_id)
    await predictions.get(db, ctx, pid)  # a 404 before the stream starts
    events = prediction_stream.events(db, ctx, pid, hub=hub_of(request), resume=last_event_id, keepalive_s=keepalive_s)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in events:
            if await request.is_disconnected():
                return
            yield chunk

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


@router.get("/webhooks/default/secret", **requires("predictions.create"))
async def default_webhook_secret(ctx: Tenant, db: DB, request: Request) -> WebhookSecretRead:
    """The secret that signs this organization's prediction webhooks (Standard Webhooks headers,
    as Replicate's: verify with `replicate.webhooks.validate` or any Standard Webhooks library)."""
    box = SecretBox(app_state(request).settings.secret_key.get_secret_value())
    return WebhookSecretRead(key=await predictions.default_secret(db, ctx, box))
