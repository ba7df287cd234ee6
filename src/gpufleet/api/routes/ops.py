"""/metrics: Prometheus exposition (prometheus-client), optionally behind a bearer token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gpufleet.api.state import app_state
from gpufleet.errors import Unauthorized
from gpufleet.observability import CONTENT_TYPE

router = APIRouter()


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}},
        401: {"description": "GPUFLEET_METRICS_TOKEN is set and not sent"},
    },
)
async def metrics(request: Request) -> Response:
    """Counters and histograms of this replica (all its workers), and, from the replica that leads
    the scheduler, the fleet's gauges. With `GPUFLEET_METRICS_TOKEN` set it takes
    `Authorization: Bearer <token>`; otherwise no credential (bind it privately)."""
    settings = app_state(request).settings
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <GPUFLEET_METRICS_TOKEN>'")
    state = app_state(request)
    state.fleet_exporter.refresh_gauges()
    body = state.metrics.exposition() + await state.fleet_exporter.exposition()
    return Response(body, media_type=CONTENT_TYPE)
