"""The SDK's plumbing: one HTTP client, problem+json errors as ApiError, pages and iteration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from gpufleet import __version__
from gpufleet.schemas.common import Page

M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound="BaseClient")


class ApiError(Exception):
    """An error answer from the server, as its problem+json said it."""

    def __init__(self, status: int, title: str, detail: str | None, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body or {}


def api_error(response: httpx.Response) -> ApiError:
    """The error a >= 400 answer stands for (its body must have been read)."""
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:200]}
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": str(body)[:200]}
    return ApiError(response.status_code, body.get("title", "Error"), body.get("detail"), body)


class BaseClient:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        organization: UUID | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": f"gpufleet-sdk/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            headers["X-Gpufleet-Organization"] = str(organization)
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------

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
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._http.request(
            method,
            path,
            json=json,
            params=clean or None,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if response.status_code >= 400:
            raise api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _one(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(self.request(method, path, **kw))

    def _page(self, model: type[M], path: str, *, limit: int | None, cursor: str | None) -> Page[M]:
        return Page[model].model_validate(  # type: ignore[valid-type]
            self.request("GET", path, params={"limit": limit, "cursor": cursor})
        )

    def _all(self, model: type[M], path: str) -> Iterator[M]:
        cursor = None
        while True:
            page = self._page(model, path, limit=200, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor
