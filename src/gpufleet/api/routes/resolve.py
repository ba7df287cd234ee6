"""/v1/resolve: short ids. The CLI (and anyone) may name a job, host, GPU or key by the start of its id."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gpufleet.api.deps import DB, Tenant, requires
from gpufleet.schemas.resolve import IdMatchRead, ResolveRead
from gpufleet.services import resolve as service

router = APIRouter(prefix="/v1", tags=["ids"])

Kind = Literal["job", "host", "gpu", "key", "join_token", "invite", "quota"]


@router.get("/resolve", **requires("ids.resolve"))
async def resolve_id(
    ctx: Tenant,
    db: DB,
    kind: Annotated[Kind, Query(description="What the id is of.")],
    prefix: Annotated[str, Query(min_length=1, max_length=64, description="At least 4 hex digits of the id.")],
) -> ResolveRead:
    """The organization's `kind` rows whose id starts with `prefix` (up to 10; `more` says if there are others).

    Seeing a kind's ids needs the right to list that kind (e.g. invites: admins). No match is an
    empty list, not a 404: the caller says "no such job" in its own words."""
    found = await service.resolve(db, ctx, kind, prefix)
    items = [IdMatchRead(id=m.id, label=m.label) for m in found[: service.MAX_MATCHES]]
    return ResolveRead(kind=kind, prefix=prefix, matches=items, more=len(found) > service.MAX_MATCHES)
