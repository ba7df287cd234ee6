"""/v1/agent/*: what node agents call. They carry their own credential, never an API key:
registration a join token (``Bearer gfj_...``), everything after it the host credential
(``Bearer gfh_...``) it was given once. Not in the user permission table for that reason.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gpufleet.api.deps import DB, forget_credentials
from gpufleet.api.routes.hosts import gpu_read
from gpufleet.api.state import app_state
from gpufleet.domain.execution import ExecutionPolicy
from gpufleet.domain.hosts import HeartbeatPolicy, HostIdentity
from gpufleet.errors import InvalidInput, Unauthorized
from gpufleet.schemas.agent import (
    AgentInstructions,
    HeartbeatRequest,
    HeartbeatResponse,
    KillOrder,
    RegisterRequest,
    RegisterResponse,
)
from gpufleet.schemas.common import vars_of
from gpufleet.services import assignments, heartbeats, hosts
from gpufleet.services.host_auth import HostAuthenticator

router = APIRouter(prefix="/v1/agent", tags=["agent"])

AGENT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, malformed, unknown, expired or revoked token or host credential"},
    409: {"description": "the report conflicts with a concurrent change; send it again"},
    413: {"description": "request body over the server's limit (1 MiB by default)"},
}


def _bearer(request: Request, prefix: str, what: str) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(f"missing credentials: send 'Authorization: Bearer {prefix}...' ({what})")
    if not token.startswith(prefix):
        raise Unauthorized(f"unrecognised credential: this endpoint takes {what} ({prefix}...), not an API key")
    return token


def _policy(request: Request) -> HeartbeatPolicy:
    """Built once per app from its settings."""
    state = request.app.state
    policy: HeartbeatPolicy | None = getattr(state, "heartbeat_policy", None)
    if policy is None:
        policy = state.heartbeat_policy = HeartbeatPolicy.from_settings(state.settings)
    return policy


def execution_policy(request: Request) -> ExecutionPolicy:
    """Built once per app from its settings (limits and timings of running work)."""
    return app_state(request).execution_policy


def host_authenticator(request: Request) -> HostAuthenticator:
    """This replica's host-credential cache (built with the app; see services/host_auth.py)."""
    return app_state(request).host_authenticator


async def current_host(request: Request) -> AsyncIterator[HostIdentity]:
    """The host a credential belongs to. A call the database refused as revoked or replaced
    (``ensure_current``) also drops the credential from this replica's cache."""
    auth = host_authenticator(request)
    host = await auth.authenticate(_bearer(request, "gfh_", "the host credential"))
    try:
        yield host
    except Unauthorized:
        auth.forget(host)
        raise


Host = Annotated[HostIdentity, Depends(current_host)]


@router.post("/register", status_code=201, responses=AGENT_ERRORS)
async def register(body: RegisterRequest, request: Request, db: DB) -> RegisterResponse:
    """Register this host with a join token (``Authorization: Bearer gfj_...``).

    Returns the host credential once; the agent keeps it and authenticates with it from then on.
    A revoked host of the same name is re-registered in place (same id, GPUs and history).
    """
    token = _bearer(request, "gfj_", "a join token")
    policy = _policy(request)
    reg = await hosts.register_host(
        db,
        token,
        body.facts.to_domain(),
        [g.to_domain() for g in body.gpus],
        labels=body.labels,
        name=body.name,
        policy=policy,
    )
    if reg.reregistered:  # the old credential is refused here at once (elsewhere: ensure_current, the TTL)
        forget_credentials(request)
    return RegisterResponse(
        host_id=reg.host.id,
        organization_id=reg.host.organization_id,
        name=reg.host.name,
        simulated=reg.host.simulated,
        reregistered=reg.reregistered,
        credential=reg.credential,
        heartbeat_interval_s=policy.interval_s,
        gpus=[gpu_read(g) for g in reg.gpus],
    )


_SAMPLE_FIELD = re.compile(r"^samples\[(\d+)\](\.\w+)?$")


def _wire_error(exc: InvalidInput, body: HeartbeatRequest) -> InvalidInput:
    """Name a bad sample as the agent sent it (``metrics[i].field[j]``), not by its flat index."""
    field = str(exc.extra.get("field", ""))
    if field == "samples":
        return InvalidInput(exc.message.replace("samples", "metrics", 1), field="metrics")
    match = _SAMPLE_FIELD.match(field)
    where = body.locate(int(match[1])) if match is not None else None
    if match is None or where is None:
        return exc
    i, j = where
    name = match[2] or ""
    wire = f"metrics[{i}]{name}" if name == ".uuid" else f"metrics[{i}]{name or '.ts'}[{j}]"
    return InvalidInput(exc.message.replace(field, wire, 1), field=wire)


@router.post("/heartbeat", responses={**AGENT_ERRORS, 422: {"description": "malformed report; nothing was stored"}})
async def heartbeat(body: HeartbeatRequest, host: Host, request: Request, db: DB) -> HeartbeatResponse:
    """Liveness, the GPUs present, changed host facts and a batch of GPU samples (``Bearer gfh_...``).

    A report that fails validation is refused whole (422 naming the field) and changes nothing.
    ``running`` lists the job attempts the agent runs; ``instructions.kill`` says which to stop
    (cancelled, timed_out, or fenced: not the job's current attempt on this host).
    """
    policy = _policy(request)
    try:
        result = await heartbeats.heartbeat(db, host, body.to_domain(), policy=policy)
    except InvalidInput as exc:
        raise _wire_error(exc, body) from None
    app_state(request).metrics.heartbeat(result.samples_received)
    running = [(r.job_id, r.attempt) for r in body.running]
    kills = await assignments.kill_instructions(db, host, running, policy=execution_policy(request))
    return HeartbeatResponse.model_validate(
        {
            **vars_of(result),
            "host_id": host.host_id,
            "heartbeat_interval_s": result.next_heartbeat_s,
            "instructions": AgentInstructions(kill=[KillOrder.model_validate(k) for k in kills]),
        }
    )
