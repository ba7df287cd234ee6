"""/v1/models: models, their default hardware, and content-addressed versions pushed as tar.gz
(Replicate's shapes; `owner` is the organization's slug)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from gpufleet.api.deps import DB, DEFAULT_LIMIT, Cursor, Limit, Tenant, requires
from gpufleet.api.state import app_state
from gpufleet.inference.archive import MAX_ARCHIVE_BYTES
from gpufleet.pagination import created_key, decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.models import CursorPage, ModelCreate, ModelRead, ModelUpdate, VersionRead
from gpufleet.services import models

router = APIRouter(prefix="/v1", tags=["models"])
NOT_FOUND: dict[int, dict[str, Any]] = {404: {"description": "no such model (or version) in this organization"}}
IN_USE: dict[int, dict[str, Any]] = {409: {"description": "a deployment or a replica still uses it"}}
PUSH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"The model directory (cog.yaml, predict.py, ...) as a tar.gz, at most "
        f"{MAX_ARCHIVE_BYTES // 2**20} MiB; `gpufleet models push` packs it.",
        # application/gzip is what the CLI sends; any content type is read the same
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def base_url(request: Request) -> str:
    """The server's address as clients reach it (``public_url`` when set)."""
    public = app_state(request).settings.public_url
    return str(public or request.base_url).rstrip("/")


def page_urls(request: Request, path: str, limit: int) -> Callable[[str | None], str | None]:
    """The URL of the page of ``path`` a cursor opens (``None`` for none), with the caller's ``limit``."""
    base = base_url(request)

    def url(cursor: str | None) -> str | None:
        if cursor is None:
            return None
        query = {"cursor": cursor} | ({"limit": str(limit)} if limit != DEFAULT_LIMIT else {})
        return f"{base}{path}?{urlencode(query)}"

    return url


def _push_route() -> dict[str, Any]:
    kw = requires(
        "models.push",
        {
            **NOT_FOUND,
            200: {
                "model": VersionRead,
                "description": "the same content was pushed before: that version, now the latest again",
            },
            413: {"description": f"the archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB"},
            422: {"description": "not a tar.gz, or cog.yaml / predict.py cannot be read (`detail` says where)"},
        },
    )
    kw["openapi_extra"] = {**kw["openapi_extra"], **PUSH_BODY}
    return kw


@router.post(
    "/models",
    status_code=201,
    **requires(
        "models.create",
        {404: {"description": "`owner` is not this organization"}, 409: {"description": "the name is taken"}},
    ),
)
async def create_model(body: ModelCreate, ctx: Tenant, db: DB, request: Request) -> ModelRead:
    """Create a model; its hardware is what each replica of its own deployment asks for."""
    view = await models.create(
        db, ctx, owner=body.owner, name=body.name, description=body.description, hardware=body.to_hardware()
    )
    return ModelRead.of(view, base_url(request))


@router.get("/models", **requires("models.list"))
async def list_models(
    ctx: Tenant, db: DB, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CursorPage[ModelRead]:
    """The organization's models, newest first."""
    rows = await models.page(db, ctx, limit=limit, after=decode_cursor(cursor))
    base = base_url(request)
    page = Page[ModelRead].of(rows, limit, lambda v: ModelRead.of(v, base), key=lambda v: created_key(v.model))
    return CursorPage[ModelRead].of(page, page_urls(request, "/v1/models", limit))


@router.get("/models/{owner}/{name}", **requires("models.read", NOT_FOUND))
async def get_model(owner: str, name: str, ctx: Tenant, db: DB, request: Request) -> ModelRead:
    """The model with its latest version and that version's OpenAPI schema."""
    return ModelRead.of(await models.get(db, ctx, owner, name), base_url(request))


@router.patch("/models/{owner}/{name}", **requires("models.update", NOT_FOUND))
async def update_model(owner: str, name: str, body: ModelUpdate, ctx: Tenant, db: DB, request: Request) -> ModelRead:
    """Change the description, or the default hardware (every hardware field given replaces it whole)."""
    hardware = body.to_hardware() if body.hardware_given() else None
    view = await models.update(db, ctx, owner, name, description=body.description, hardware=hardware)
    return ModelRead.of(view, base_url(request))


@router.delete("/models/{owner}/{name}", status_code=204, **requires("models.delete", {**NOT_FOUND, **IN_USE}))
async def delete_model(owner: str, name: str, ctx: Tenant, db: DB) -> Response:
    """Delete the model and all its versions."""
    await models.delete(db, ctx, owner, name)
    return Response(status_code=204)


@router.get("/models/{owner}/{name}/versions", **requires("models.read", NOT_FOUND))
async def list_model_versions(
    owner: str, name: str, ctx: Tenant, db: DB, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CursorPage[VersionRead]:
    """The model's versions, newest first."""
    rows = await models.version_page(db, ctx, owner, name, limit=limit, after=decode_cursor(cursor))
    url = page_urls(request, f"/v1/models/{owner}/{name}/versions", limit)
    return CursorPage[VersionRead].of(Page[VersionRead].of(rows, limit, VersionRead.of), url)


@router.post(
    "/models/{owner}/{name}/versions",
    status_code=201,
    **_push_route(),
)
async def push_model_version(
    owner: str, name: str, ctx: Tenant, db: DB, request: Request, response: Response
) -> VersionRead:
    """Push a version: the body is the model directory as a tar.gz. Content-addressed: the same
    content gives the same version (200), new content a new one (201); either becomes the latest."""
    version, created = await models.push(db, ctx, owner, name, await request.body())
    response.status_code = 201 if created else 200
    return VersionRead.of(version)


@router.get("/models/{owner}/{name}/versions/{version_id}", **requires("models.read", NOT_FOUND))
async def get_model_version(owner: str, name: str, version_id: str, ctx: Tenant, db: DB) -> VersionRead:
    return VersionRead.of(await models.version(db, ctx, owner, name, version_id))


@router.delete(
    "/models/{owner}/{name}/versions/{version_id}",
    status_code=204,
    **requires("models.delete", {**NOT_FOUND, **IN_USE}),
)
async def delete_model_version(owner: str, name: str, version_id: str, ctx: Tenant, db: DB) -> Response:
    """Delete one version; the newest one left becomes the latest."""
    await models.delete_version(db, ctx, owner, name, version_id)
    return Response(status_code=204)
