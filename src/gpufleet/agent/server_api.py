"""The agent's side of /v1/agent: keep-alive async HTTP, outbound only, to one of the replicas.

Errors come back as two kinds: ``ServerUnreachable`` (network trouble, 5xx, 429: retry
later, keep the data) and ``Refused`` (any other 4xx: retrying the same request will not help).
Given several replicas, a request that fails on one for network trouble or a 5xx goes to the
next at once (agent/replicas.py); ``ServerUnreachable`` means every replica failed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote
from uuid import UUID

import httpx

from gpufleet import __version__
from gpufleet.agent.replicas import ReplicaSet, parse_servers
from gpufleet.schemas.agent import HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse
from gpufleet.schemas.execution import (
    AssignmentsPoll,
    AssignmentsResponse,
    ExitIn,
    LogsAck,
    LogsIn,
    ReconcileIn,
    ReconcileOut,
    ReportsIn,
    ReportsOut,
    RunningJobIn,
    StartedIn,
)
from gpufleet.schemas.runner import (
    AgentFileOut,
    ClaimIn,
    ClaimOut,
    PredictionEventsOut,
    ReplicaStateIn,
)


class ServerUnreachable(Exception):
    """The server could not answer now; try again later. ``retry_after`` when it said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The server refused the request (4xx); the message is its problem+json detail."""

    def __init__(self, status: int, title: str, detail: str | None, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail or title
        self.problem = problem or {}

    @property
    def stale(self) -> bool:
        """A 409 on a job report: the attempt is not (or no longer) the job's current one here."""
        return self.status == 409


CONNECT_TIMEOUT_S = 5.0  # a replica that does not accept a connection this fast is passed over


class AgentApi:
    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.replicas = ReplicaSet(parse_servers(url))
        self.timeout = timeout
        self._transport = transport
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._poll_post = True  # POST /v1/agent/assignments (stops pushed); False once a server says 405

    @property
    def url(self) -> str:
        """The replica in use now."""
        return self.replicas.url

    def _client(self, index: int) -> httpx.AsyncClient:
        client = self._clients.get(index)
        if client is None:
            client = httpx.AsyncClient(
                base_url=self.replicas.urls[index],
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_S)),
                transport=self._transport,
                headers={"User-Agent": f"gpufleet-agent/{__version__}"},
            )
            self._clients[index] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def _post(self, path: str, secret: str, body: bytes) -> Any:
        return await self._call("POST", path, secret, content=body)

    async def _call(
        self,
        method: str,
        path: str,
        secret: str,
        *,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        read_s: float | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """One request; the JSON answer (None for 204), or with ``raw`` the response itself."""
        headers = {"Authorization": f"Bearer {secret}", **(headers or {})}
        if content is not None:
            headers.setdefault("Content-Type", "application/json")
        extra: dict[str, Any] = {} if read_s is None else {"timeout": read_s}
        failure: ServerUnreachable | None = None
        for index in self.replicas.order():
            url = self.replicas.urls[index]
            try:
                response = await self._client(index).request(
                    method, path, content=content, params=params, headers=headers, **extra
                )
            except httpx.TransportError as exc:
                failure = ServerUnreachable(f"cannot reach {url}: {exc.__class__.__name__}: {exc}")
                self.replicas.failed(index, exc.__class__.__name__)
                continue
            if response.status_code >= 500:
                retry = response.headers.get("retry-after", "")
                failure = ServerUnreachable(
                    f"{url} answered {response.status_code} {response.reason_phrase}",
                    retry_after=float(retry) if retry.isdigit() else None,
                )
                self.replicas.failed(index, f"{response.status_code} {response.reason_phrase}")
                continue
            return _answer(response, raw=raw)
        assert failure is not None
        raise failure

    async def register(self, join_token: str, request: RegisterRequest) -> RegisterResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        return RegisterResponse.model_validate(await self._post("/v1/agent/register", join_token, body))

    async def heartbeat(self, credential: str, request: HeartbeatRequest) -> HeartbeatResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        return HeartbeatResponse.model_validate(await self._post("/v1/agent/heartbeat", credential, body))

    # -- running work (docs/execution.md) --------------------------------------------------------

    async def assignments(
        self, credential: str, *, wait_s: float, running: list[RunningJobIn] | None = None
    ) -> AssignmentsResponse:
        """Long-poll: the host's assignments now, or the first within ``wait_s`` seconds. With
        ``running`` (POST), a cancel or a fence of one of those runs ends it too (``kill``); a server
        without the POST (405) is asked with GET from then on, leaving stops to the heartbeat."""
        if running is not None and self._poll_post:
            body = AssignmentsPoll(wait_s=wait_s, running=running).model_dump_json().encode()
            try:
                raw = await self._call(
                    "POST", "/v1/agent/assignments", credential, content=body, read_s=wait_s + self.timeout
                )
            except Refused as exc:
                if exc.status != 405:
                    raise
                self._poll_post = False
            else:
                return AssignmentsResponse.model_validate(raw)
        reply = await self._call(
            "GET",
            "/v1/agent/assignments",
            credential,
            params={"wait_s": f"{wait_s:g}"},
            read_s=wait_s + self.timeout,
        )
        return AssignmentsResponse.model_validate(reply)

    async def started(self, credential: str, job_id: UUID, request: StartedIn) -> None:
        await self._post(f"/v1/agent/jobs/{job_id}/started", credential, request.model_dump_json().encode())

    async def exited(self, credential: str, job_id: UUID, request: ExitIn) -> None:
        await self._post(f"/v1/agent/jobs/{job_id}/exit", credential, request.model_dump_json().encode())

    async def logs(self, credential: str, job_id: UUID, request: LogsIn) -> LogsAck:
        body = request.model_dump_json().encode()
        return LogsAck.model_validate(await self._post(f"/v1/agent/jobs/{job_id}/logs", credential, body))

    async def reports(self, credential: str, request: ReportsIn) -> ReportsOut:
        """Many job reports in one request (agent/jobs/reporter.py); every item answered alone."""
        body = request.model_dump_json().encode()
        return ReportsOut.model_validate(await self._post("/v1/agent/reports", credential, body))

    async def reconcile(self, credential: str, request: ReconcileIn) -> ReconcileOut:
        body = request.model_dump_json().encode()
        return ReconcileOut.model_validate(await self._post("/v1/agent/reconcile", credential, body))

    # -- the Model Runner (docs/agent.md, "The Model Runner") ------------------------------------

    async def version_archive(self, credential: str, version_id: UUID) -> tuple[bytes, str | None]:
        """A model version's tar.gz and the digest the server states for it (``X-Gpufleet-Digest``)."""
        response = await self._call("GET", f"/v1/agent/model-versions/{version_id}/archive", credential, raw=True)
        return response.content, response.headers.get("x-gpufleet-digest")

    async def replica_state(self, credential: str, replica_id: UUID, request: ReplicaStateIn) -> None:
        body = request.model_dump_json(exclude_none=True).encode()
        await self._post(f"/v1/agent/replicas/{replica_id}/state", credential, body)

    async def claim(self, credential: str, request: ClaimIn) -> ClaimOut:
        """Long-poll: predictions for the host's ready replicas, cancels and drains."""
        body = request.model_dump_json().encode()
        reply = await self._call(
            "POST", "/v1/agent/predictions/claim", credential, content=body, read_s=request.wait_s + self.timeout
        )
        return ClaimOut.model_validate(reply)

    async def prediction_events(self, credential: str, body: bytes) -> PredictionEventsOut:
        """``body``: a PredictionEventsIn, serialized by the caller (it sizes batches by their bytes)."""
        return PredictionEventsOut.model_validate(await self._post("/v1/agent/predictions/events", credential, body))

    async def upload_file(
        self, credential: str, prediction_id: str, name: str, content_type: str, data: bytes
    ) -> AgentFileOut:
        reply = await self._call(
            "POST",
            "/v1/agent/files",
            credential,
            content=data,
            params={"prediction_id": prediction_id},
            headers={"Content-Type": content_type, "X-Gpufleet-Filename": quote(name, safe="")},
        )
        return AgentFileOut.model_validate(reply)

    async def download_file(self, credential: str, file_id: str) -> tuple[bytes, str | None, str | None]:
        """A file's bytes, its name and content type."""
        response = await self._call("GET", f"/v1/agent/files/{file_id}", credential, raw=True)
        name = response.headers.get("x-gpufleet-filename")
        return response.content, None if name is None else unquote(name), response.headers.get("content-type")


def _answer(response: httpx.Response, *, raw: bool = False) -> Any:
    """A replica's answer: its JSON body, or the error it means (408/429: later; other 4xx: refused)."""
    if response.status_code in (408, 429):
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
        if not isinstance(problem, dict):
            problem = {}
        raise Refused(
            response.status_code, problem.get("title", response.reason_phrase), problem.get("detail"), problem
        )
    if raw:
        return response
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ServerUnreachable(f"server answered {response.status_code} with a body that is not JSON") from exc
