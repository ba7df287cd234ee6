"""SDK methods: predictions (create, wait, stream, list, cancel) and deployments (sync and async).

What runs is named like Replicate names it: ``"owner/name"`` (a model's latest version on its own
deployment), ``"owner/name:<version>"`` or a bare version id, or ``deployment="owner/name"``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from gpufleet.backoff import Backoff
from gpufleet.domain.models import DIGEST_RE, split_ref
from gpufleet.domain.predictions import PREFER_WAIT_MAX_S
from gpufleet.schemas.models import CursorPage
from gpufleet.schemas.predictions import DeploymentRead, PredictionRead
from gpufleet.sdk.base import AsyncBaseClient, BaseClient, cursor_page_of, decode, present
from gpufleet.sdk.sse import aevents, events

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a prediction: ``event`` is output, logs, error or done."""

    event: str
    data: str
    id: str


def create_request(
    ref: str | None, *, deployment: str | None, input: dict[str, Any], stream: bool, webhook: str | None,
    webhook_events_filter: list[str] | None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """(path, body) of a create: by deployment, by model (``owner/name``), or by version."""
    body: dict[str, Any] = {"input": input, "stream": stream}
    if webhook is not None:
        body["webhook"] = webhook
    if webhook_events_filter is not None:
        body["webhook_events_filter"] = webhook_events_filter
    if deployment is not None:
        owner, name = split_ref(deployment)
        return f"/v1/deployments/{owner}/{name}/predictions", body
    if ref is None:
        raise ValueError("give a model (owner/name), a version, or deployment=")
    if ":" in ref or DIGEST_RE.match(ref):
        return "/v1/predictions", {**body, "version": ref}
    owner, name = split_ref(ref)
    return f"/v1/models/{owner}/{name}/predictions", body


def create_headers(wait: float | bool | None, source: str | None) -> tuple[dict[str, str], Any]:
    """A create's headers (``Prefer: wait``, the caller's ``X-Gpufleet-Source``) and its HTTP timeout,
    long enough to let the server hold the answer."""
    headers: dict[str, str] = {}
    timeout: Any = httpx.USE_CLIENT_DEFAULT
    if wait is not None and wait is not False:
        seconds = PREFER_WAIT_MAX_S if wait is True else max(1, min(PREFER_WAIT_MAX_S, round(wait)))
        headers["Prefer"] = f"wait={seconds}"
        timeout = seconds + 15.0
    if source:
        headers["X-Gpufleet-Source"] = source
    return headers, timeout


def predictions_request(limit: int, cursor_url: str | None) -> tuple[str, dict[str, Any] | None]:
    """(path, params) of one page of predictions: the first (``limit``), or the one ``cursor_url`` names."""
    return (cursor_url, None) if cursor_url else ("/v1/predictions", {"limit": limit})


def prediction_path(prediction: PredictionRead | str | UUID) -> str:
    pid = prediction.id if isinstance(prediction, PredictionRead) else str(prediction)
    return f"/v1/predictions/{pid}"


class PredictionWait:
    """``wait_prediction``'s re-reads: 0.1 s doubling to 2 s apart, until the prediction ends or
    ``timeout_s`` has passed."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.backoff = Backoff(0.1, cap=2.0)

    def settled(self, p: PredictionRead) -> bool:
        return p.status in TERMINAL or time.monotonic() >= self.deadline

    def delay(self) -> float:
        """Seconds until the next read (never past the deadline)."""
        return min(self.backoff.next(), max(0.0, self.deadline - time.monotonic()))


def deployment_path(ref: str) -> str:
    owner, name = split_ref(ref)
    return f"/v1/deployments/{owner}/{name}"


def deployment_body(**fields: Any) -> dict[str, Any]:
    """Only the fields given: ``version``, ``hardware``, ``min_instances``, ``max_instances``,
    ``idle_timeout_s``, ``gpus``, ``gpu_fraction``, ``min_memory_gb``, ``gpu_model``, ``cpu``, ``ram_gb``."""
    if isinstance(fields.get("gpu_model"), str):
        fields["gpu_model"] = [fields["gpu_model"]]
    return present(fields)


class PredictionsMixin(BaseClient):
    def create_prediction(
        self,
        ref: str | None = None,
        input: dict[str, Any] | None = None,
        *,
        deployment: str | None = None,
        wait: float | bool | None = None,
        stream: bool = False,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        source: str | None = None,
    ) -> PredictionRead:
        """Queue a prediction; with ``wait`` (True: 60 s, or seconds up to 60) the answer comes
        when it ends (check ``status``: it reads ``starting`` if the time ran out)."""
        path, body = create_request(
            ref, deployment=deployment, input=input or {}, stream=stream, webhook=webhook,
            webhook_events_filter=webhook_events_filter,
        )  # fmt: skip
        headers, timeout = create_headers(wait, source)
        r = self._http.post(path, json=body, headers=headers, timeout=timeout)
        return PredictionRead.model_validate(decode(r))

    def get_prediction(self, prediction: PredictionRead | str | UUID) -> PredictionRead:
        return self._one(PredictionRead, "GET", prediction_path(prediction))

    def cancel_prediction(self, prediction: PredictionRead | str | UUID) -> PredictionRead:
        return self._one(PredictionRead, "POST", f"{prediction_path(prediction)}/cancel")

    def list_predictions(self, *, limit: int = 50, cursor_url: str | None = None) -> CursorPage[PredictionRead]:
        """One page, newest first; pass the page's ``next`` back as ``cursor_url`` for the next one."""
        path, params = predictions_request(limit, cursor_url)
        return cursor_page_of(PredictionRead, self.request("GET", path, params=params))

    def iter_predictions(self) -> Iterator[PredictionRead]:
        return self._pages(PredictionRead, "/v1/predictions")

    def wait_prediction(self, prediction: PredictionRead | str | UUID, *, timeout_s: float = 600.0) -> PredictionRead:
        """The prediction once it ended (re-read, 0.1 s doubling to 2 s apart), or as it is at ``timeout_s``."""
        wait = PredictionWait(timeout_s)
        while True:
            p = self.get_prediction(prediction)
            if wait.settled(p):
                return p
            time.sleep(wait.delay())

    def stream_prediction(self, prediction: PredictionRead | str | UUID) -> Iterator[StreamEvent]:
        """Its server-sent events until ``done`` (created with ``stream=True``)."""
        url = f"{prediction_path(prediction)}/stream"
        with self._http.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                decode(r)
            for sse in events(r.iter_text()):
                yield StreamEvent(sse.event, sse.data, sse.id or "")
                if sse.event == "done":
                    return

    # -- deployments ----------------------------------------------------------------------

    def create_deployment(self, name: str, model: str, **fields: Any) -> DeploymentRead:
        body = {"name": name, "model": model, **deployment_body(**fields)}
        return self._one(DeploymentRead, "POST", "/v1/deployments", json=body)

    def update_deployment(self, ref: str, **changes: Any) -> DeploymentRead:
        return self._one(DeploymentRead, "PATCH", deployment_path(ref), json=deployment_body(**changes))

    def get_deployment(self, ref: str) -> DeploymentRead:
        return self._one(DeploymentRead, "GET", deployment_path(ref))

    def list_deployments(self) -> list[DeploymentRead]:
        return list(self._pages(DeploymentRead, "/v1/deployments"))

    def delete_deployment(self, ref: str) -> None:
        self.request("DELETE", deployment_path(ref))


class AsyncPredictionsMixin(AsyncBaseClient):
    async def create_prediction(
        self,
        ref: str | None = None,
        input: dict[str, Any] | None = None,
        *,
        deployment: str | None = None,
        wait: float | bool | None = None,
        stream: bool = False,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        source: str | None = None,
    ) -> PredictionRead:
        path, body = create_request(
            ref, deployment=deployment, input=input or {}, stream=stream, webhook=webhook,
            webhook_events_filter=webhook_events_filter,
        )  # fmt: skip
        headers, timeout = create_headers(wait, source)
        r = await self._http.post(path, json=body, headers=headers, timeout=timeout)
        return PredictionRead.model_validate(decode(r))

    async def get_prediction(self, prediction: PredictionRead | str | UUID) -> PredictionRead:
        return await self._one(PredictionRead, "GET", prediction_path(prediction))

    async def cancel_prediction(self, prediction: PredictionRead | str | UUID) -> PredictionRead:
        return await self._one(PredictionRead, "POST", f"{prediction_path(prediction)}/cancel")

    async def list_predictions(self, *, limit: int = 50, cursor_url: str | None = None) -> CursorPage[PredictionRead]:
        path, params = predictions_request(limit, cursor_url)
        return cursor_page_of(PredictionRead, await self.request("GET", path, params=params))

    async def stream_prediction(self, prediction: PredictionRead | str | UUID) -> AsyncIterator[StreamEvent]:
        url = f"{prediction_path(prediction)}/stream"
        async with self._http.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=None) as r:
            if r.status_code >= 400:
                await r.aread()
                decode(r)
            async for sse in aevents(r.aiter_text()):
                yield StreamEvent(sse.event, sse.data, sse.id or "")
                if sse.event == "done":
                    return

    async def create_deployment(self, name: str, model: str, **fields: Any) -> DeploymentRead:
        body = {"name": name, "model": model, **deployment_body(**fields)}
        return await self._one(DeploymentRead, "POST", "/v1/deployments", json=body)

    async def update_deployment(self, ref: str, **changes: Any) -> DeploymentRead:
        return await self._one(DeploymentRead, "PATCH", deployment_path(ref), json=deployment_body(**changes))

    async def get_deployment(self, ref: str) -> DeploymentRead:
        return await self._one(DeploymentRead, "GET", deployment_path(ref))

    async def list_deployments(self) -> list[DeploymentRead]:
        return [d async for d in self._pages(DeploymentRead, "/v1/deployments")]

    async def wait_prediction(
        self, prediction: PredictionRead | str | UUID, *, timeout_s: float = 600.0
    ) -> PredictionRead:
        wait = PredictionWait(timeout_s)
        while True:
            p = await self.get_prediction(prediction)
            if wait.settled(p):
                return p
            await asyncio.sleep(wait.delay())

    async def delete_deployment(self, ref: str) -> None:
        await self.request("DELETE", deployment_path(ref))


def item_of(event: StreamEvent) -> Any:
    """An ``output`` event's item: JSON when it parses as an object or array, else the text."""
    if event.data[:1] in ("{", "["):
        try:
            return json.loads(event.data)
        except ValueError:
            return event.data
    return event.data
