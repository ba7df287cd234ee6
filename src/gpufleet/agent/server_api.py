"""The agent's side of /v1/agent: one keep-alive async HTTP client, outbound only.

Errors come back as two kinds: ``ServerUnreachable`` (network trouble, 5xx, 429: retry
later, keep the data) and ``Refused`` (any other 4xx: retrying the same request will not help).
"""

from __future__ import annotations

from typing import Any

import httpx

from gpufleet import __version__
from gpufleet.schemas.agent import HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse


class ServerUnreachable(Exception):
    """The server could not answer now; try again later. ``retry_after`` when it said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The server refused the request (4xx); the message is its problem+json detail."""

    def __init__(self, status: int, title: str, detail: str | None) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail or title


class AgentApi:
    def __init__(
        self, url: str, *, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"gpufleet-agent/{__version__}"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, secret: str, body: bytes) -> Any:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        try:
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            retry = response.headers.get("retry-after", "")
            raise ServerUnreachable(
                f"server answered {response.status_code} {response.reason_phrase}",
                retry_after=float(retry) if retry.isdigit() else None,
            )
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise Refused(response.status_code, problem.get("title", response.reason_phrase), problem.get("detail"))
        try:
            return response.json()
        except ValueError as exc:
            raise ServerUnreachable(f"server answered {response.status_code} with a body that is not JSON") from exc

    async def register(self, join_token: str, request: RegisterRequest) -> RegisterResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        return RegisterResponse.model_validate(await self._post("/v1/agent/register", join_token, body))

    async def heartbeat(self, credential: str, request: HeartbeatRequest) -> HeartbeatResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        return HeartbeatResponse.model_validate(await self._post("/v1/agent/heartbeat", credential, body))
