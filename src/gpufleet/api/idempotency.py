"""The HTTP side of idempotent POSTs (services/idempotency.py): the ``Idempotency-Key`` header,
and a replayed answer marked ``Idempotent-Replayed: true`` with the first answer's status.

A route adopts it in three steps (POST /v1/jobs is the example):

    async def create(body: XCreate, ctx: Tenant, db: DB, response: Response, idempotency_key: IdempotencyKey = None):
        request = IdempotentRequest.of("POST /v1/xs", idempotency_key, body.model_dump(mode="json"))
        reply = await once(db, ctx, request, work=lambda conn: xs.create_in(conn, ctx, ...),
                           render=XRead.of, status=201)
        return answer(reply, response, XRead)
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Header, Response
from pydantic import BaseModel

from gpufleet.services.idempotency import KEY_MAX_LEN, Reply

M = TypeVar("M", bound=BaseModel)

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=KEY_MAX_LEN + 2,  # a structured-field string's quotes
        description="Retry safely: a request repeated with the same key (and the same body) within 24 h is done "
        "once and answered with the first answer (status and body) and `Idempotent-Replayed: true`; the same key "
        "with another body is a 422. A UUID per logical request is a good key.",
    ),
]

IDEMPOTENT_RESPONSES: dict[int, dict[str, Any]] = {
    422: {"description": "invalid request, or an `Idempotency-Key` reused with another body"},
}


def answer(reply: Reply[M], response: Response, model: type[M]) -> M:
    """The route's return value: the fresh result, or the stored one with the first status."""
    if not reply.replayed:
        assert reply.fresh is not None
        return reply.fresh
    response.status_code = reply.status
    response.headers[REPLAYED_HEADER] = "true"
    return model.model_validate(reply.body)
