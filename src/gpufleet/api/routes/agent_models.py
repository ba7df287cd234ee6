"""/v1/agent/model-versions/* and /v1/agent/files*: what the agent's Model Runner downloads and
uploads, with the host credential (docs/agent.md, "The Model Runner"). Raw bytes both ways: a
version's archive, a Path output of a prediction running on the host, a file given as an input."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, unquote
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from gpufleet.api.deps import DB
from gpufleet.api.routes.agent import AGENT_ERRORS, Host
from gpufleet.api.routes.models import base_url
from gpufleet.api.state import app_state
from gpufleet.schemas.runner import AgentFileOut
from gpufleet.services import agent_models

router = APIRouter(prefix="/v1/agent", tags=["agent"])


def _bytes(description: str, media: str) -> dict[int | str, dict[str, Any]]:
    return {**AGENT_ERRORS, 200: {"description": description, "content": {media: {}}}}


@router.get(
    "/model-versions/{version_id}/archive",
    response_class=Response,
    responses={
        **_bytes("The version's tar.gz; `X-Gpufleet-Digest` is its digest.", "application/gzip"),
        404: {"description": "no such version in the host's organization"},
    },
)
async def version_archive(version_id: UUID, host: Host, db: DB) -> Response:
    """A model version's archive, for the agent to verify (digest) and unpack into its environment cache."""
    digest, data = await agent_models.version_archive(db, host, version_id)
    return Response(content=data, media_type="application/gzip", headers={"X-Gpufleet-Digest": digest})


@router.post(
    "/files",
    status_code=201,
    responses={
        **AGENT_ERRORS,
        404: {"description": "the prediction does not run on this host"},
        413: {"description": "the file is over `files_max_bytes`"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"*/*": {"schema": {"type": "string"}}}}},
)
async def upload_output_file(
    host: Host,
    request: Request,
    db: DB,
    prediction_id: Annotated[UUID, Query(description="The prediction whose output this file is.")],
) -> AgentFileOut:
    """A `cog.Path` output: the raw body, named by `X-Gpufleet-Filename` (URL-encoded), typed by
    `Content-Type`. The answer's `url` replaces the path in the prediction's output."""
    data = await request.body()
    name = request.headers.get("x-gpufleet-filename")
    f = await agent_models.store_output(
        db,
        app_state(request).settings,
        host,
        prediction_id,
        name=None if name is None else unquote(name),
        content_type=request.headers.get("content-type"),
        data=data,
    )
    return AgentFileOut(id=str(f.id), url=f"{base_url(request)}/v1/files/{f.id}/download")


@router.get(
    "/files/{file_id}",
    response_class=Response,
    responses={**_bytes("The file's bytes.", "*/*"), 404: {"description": "no such file, or it expired"}},
)
async def download_input_file(file_id: UUID, host: Host, db: DB) -> Response:
    """A file given as a prediction input, for the agent to hand to the model's worker."""
    f, data = await agent_models.input_file(db, host, file_id)
    return Response(content=data, media_type=f.content_type, headers={"X-Gpufleet-Filename": quote(f.name, safe="")})
