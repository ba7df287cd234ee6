"""The SDK's one HTTP layer: how a request is shaped and an answer read, for the sync and async clients.

Both clients take the same arguments; without ``url``/``api_key`` they read what the CLI reads
(arguments, then ``GPUFLEET_URL``/``GPUFLEET_API_KEY``, then the config file: ``sdk/config.py``).
Every >= 400 answer becomes the typed error of ``sdk/errors.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from gpufleet import __version__
from gpufleet.limits import MAX_PAGE
from gpufleet.schemas.common import Page
from gpufleet.schemas.models import CursorPage
from gpufleet.sdk import config
from gpufleet.sdk.errors import GpufleetError, api_error

M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound="BaseClient")
A = TypeVar("A", bound="AsyncBaseClient")

ApiError = GpufleetError  # the name this class had before the typed errors; kept for existing code

__all__ = ["ApiError", "AsyncBaseClient", "BaseClient", "api_error", "decode", "present"]


# How much longer than the server may hold a long poll the HTTP client waits for its answer.
LONG_POLL_MARGIN_S = 30.0


def _setup(url: str | None, api_key: str | None, organization: UUID | None) -> tuple[str, dict[str, str]]:
    cfg = config.load(url, api_key)
    headers = {"User-Agent": f"gpufleet-sdk/{__version__}"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    if organization:
        headers["X-Gpufleet-Organization"] = str(organization)
    return cfg.url.rstrip("/"), headers


def present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are given (not None): what a PATCH changes, or the query a request sends."""
    return {k: v for k, v in fields.items() if v is not None}


def _request_kw(json: Any, params: dict[str, Any] | None, timeout: float | None) -> dict[str, Any]:
    return {
        "json": json,
        "params": present(params or {}) or None,
        "timeout": timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
    }


def decode(response: httpx.Response) -> Any:
    """The JSON of a successful answer (None for an empty one); the typed error otherwise."""
    if response.status_code >= 400:
        raise api_error(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def page_of(model: type[M], raw: Any) -> Page[M]:
    return Page[model].model_validate(raw)  # type: ignore[valid-type]


def page_params(params: dict[str, Any] | None, cursor: str | None) -> dict[str, Any]:
    """The query of one full page of a listing (``Page``: ``items``, ``next_cursor``)."""
    return {**(params or {}), "limit": MAX_PAGE, "cursor": cursor}


def cursor_page_of(model: type[M], raw: Any) -> CursorPage[M]:
    return CursorPage[model].model_validate(raw)  # type: ignore[valid-type]


def first_url(path: str) -> str:
    """The first full page of a Replicate-style listing (``CursorPage``: ``results``, ``next`` URL)."""
    return f"{path}?limit={MAX_PAGE}"


class BaseClient:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        organization: UUID | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, headers = _setup(url, api_key, organization)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``timeout`` (seconds) replaces the client's for this call (long polls need more)."""
        return decode(self._http.request(method, path, **_request_kw(json, params, timeout)))

    def _one(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(self.request(method, path, **kw))

    def _all(self, model: type[M], path: str, params: dict[str, Any] | None = None) -> Iterator[M]:
        """Every item of a listing, a page at a time as the caller iterates."""
        cursor = None
        while True:
            page = page_of(model, self.request("GET", path, params=page_params(params, cursor)))
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def _pages(self, model: type[M], path: str) -> Iterator[M]:
        """Every item of a Replicate-style listing, following its ``next`` URLs."""
        url: str | None = first_url(path)
        while url:
            page = cursor_page_of(model, self.request("GET", url))
            yield from page.results
            url = page.next


class AsyncBaseClient:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        organization: UUID | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, headers = _setup(url, api_key, organization)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpx's per-request timeout, as the sync client's)
    ) -> Any:
        return decode(await self._http.request(method, path, **_request_kw(json, params, timeout)))

    async def _one(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(await self.request(method, path, **kw))

    async def _all(self, model: type[M], path: str, params: dict[str, Any] | None = None) -> AsyncIterator[M]:
        cursor = None
        while True:
            page = page_of(model, await self.request("GET", path, params=page_params(params, cursor)))
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def _pages(self, model: type[M], path: str) -> AsyncIterator[M]:
        url: str | None = first_url(path)
        while url:
            page = cursor_page_of(model, await self.request("GET", url))
            for item in page.results:
                yield item
            url = page.next
