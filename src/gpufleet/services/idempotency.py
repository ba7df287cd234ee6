"""Idempotent requests: a POST retried with the same ``Idempotency-Key`` is done once.

A client that did not hear the answer (a replica restarting, a connection cut) sends the request
again, to any replica, with the same key: the first try's response comes back (same status and
body) instead of a second job. The key is claimed in the very transaction that does the work,
so two tries racing each other are serialised by PostgreSQL: the second waits for the first's
commit and replays it. Only successful responses are kept (an error rolls back with the work,
so a retry does the work again); keys live 24 hours. docs/api.md, "Retries: Idempotency-Key".

To make another POST idempotent: split its use case so the work runs on a given connection
(``jobs.submit_in``), then call ``once`` with it (``api/idempotency.py`` does the HTTP side).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gpufleet.db.pool import Connection, Database, in_batches
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Conflict, InvalidInput
from gpufleet.repo import idempotency as repo

T = TypeVar("T")
R = TypeVar("R")

RETENTION_S = 24 * 3600.0
KEY_MAX_LEN = 255


class KeyReused(InvalidInput):
    """The key was used before with another request body (422, as the IETF draft says)."""

    title = "Idempotency Key Reused"


def request_hash(payload: Any) -> str:
    """SHA-256 of the request as parsed, in canonical JSON: spacing and key order do not count."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    scope: str  # which operation, e.g. "POST /v1/jobs": a key is per organization and scope
    key: str
    request_hash: str

    @classmethod
    def of(cls, scope: str, key: str | None, payload: Any) -> IdempotentRequest | None:
        """None without a key; InvalidInput for a malformed one. The key may be given as a
        structured-field string (``"abc"``, as the IETF draft writes it) or bare (``abc``)."""
        if key is None:
            return None
        if len(key) >= 2 and key[0] == key[-1] == '"':
            key = key[1:-1]
        if not 1 <= len(key) <= KEY_MAX_LEN or not all(0x21 <= ord(c) <= 0x7E for c in key):
            raise InvalidInput(
                f"Idempotency-Key: 1 to {KEY_MAX_LEN} visible ASCII characters (a UUID is a good choice)",
                field="Idempotency-Key",
            )
        return cls(scope, key, request_hash(payload))


@dataclass(frozen=True, slots=True)
class Reply(Generic[R]):
    status: int
    body: Any  # the response body as JSON values: stored with the key, or replayed from it
    replayed: bool
    fresh: R | None = None  # the rendered result when the work ran now


def _json(value: Any) -> Any:
    """A response as JSON values: a pydantic model dumped as it goes on the wire."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


async def once(
    db: Database,
    ctx: TenantContext,
    request: IdempotentRequest | None,
    *,
    work: Callable[[Connection], Awaitable[T]],
    render: Callable[[T], R],
    status: int,
    retention_s: float = RETENTION_S,
) -> Reply[R]:
    """Run ``work`` in one tenant transaction, unless ``request``'s key already holds a response.

    ``render`` turns the result into the response (a pydantic model, or JSON values), stored
    with the key and committed with the work. Raises ``KeyReused`` when the key came with
    another request body, and ``Conflict`` in the unlikely case its first request is still in
    flight after the wait. The key belongs to ``ctx``'s user.
    """
    org_id, user_id = ctx.org_id, ctx.user_id
    async with db.transaction(org_id, user_id=user_id) as conn:
        stored = None
        if request is not None:
            stored = await repo.claim(
                conn,
                org_id=org_id,
                scope=request.scope,
                key=request.key,
                request_hash=request.request_hash,
                retention_s=retention_s,
                user_id=user_id,
            )
        if stored is None:
            rendered = render(await work(conn))
            body = _json(rendered) if request is not None else None
            if request is not None:
                await repo.store_response(
                    conn, org_id=org_id, scope=request.scope, key=request.key, status=status, body=body
                )
            return Reply(status, body, replayed=False, fresh=rendered)
    assert request is not None
    if stored.request_hash != request.request_hash:
        raise KeyReused(
            f"Idempotency-Key {request.key!r} was used for a different request in the last "
            f"{retention_s / 3600:g} h; use a new key for a new request",
            field="Idempotency-Key",
        )
    if stored.response_status is None:
        raise Conflict(f"a request with Idempotency-Key {request.key!r} is still in progress; retry shortly")
    return Reply(stored.response_status, stored.response_body, replayed=True)


async def purge(db: Database, *, retention_s: float = RETENTION_S, batch: int = 5000) -> int:
    """Delete expired keys in batches; how many went (events retention calls this)."""
    return await in_batches(
        db, lambda conn, n: repo.delete_expired(conn, retention_s=retention_s, limit=n), batch=batch
    )
