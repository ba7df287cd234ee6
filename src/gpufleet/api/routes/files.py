"""/v1/files: uploads for prediction inputs and stored outputs (Replicate's files API:
multipart/form-data with the file in `content`, optional `filename`, `type` and JSON `metadata`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from gpufleet.api.deps import DB, DEFAULT_LIMIT, Cursor, Limit, Tenant, requires
from gpufleet.api.routes.models import base_url, page_urls
from gpufleet.api.state import app_state
from gpufleet.errors import InvalidInput
from gpufleet.pagination import decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.models import CursorPage, FileRead
from gpufleet.services import files

router = APIRouter(prefix="/v1", tags=["files"])
NOT_FOUND: dict[int, dict[str, Any]] = {404: {"description": "no such file in this organization, or it expired"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["content"],
                    "properties": {
                        "content": {"type": "string", "format": "binary", "description": "The file."},
                        "filename": {"type": "string", "description": "Its name (default: the part's filename)."},
                        "type": {"type": "string", "description": "Its content type (default: the part's)."},
                        "metadata": {"type": "string", "description": "A JSON object kept with the file."},
                    },
                }
            }
        },
    }
}


def _upload_route() -> dict[str, Any]:
    kw = requires(
        "files.upload",
        {
            413: {"description": "the file is over `files_max_bytes`"},
            422: {"description": "not a multipart body with one file in `content`, or `metadata` is not a JSON object"},
        },
    )
    kw["openapi_extra"] = {**kw["openapi_extra"], **UPLOAD_BODY}
    return kw


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@router.post("/files", status_code=201, **_upload_route())
async def create_file(ctx: Tenant, db: DB, request: Request) -> FileRead:
    """Upload a file; pass its `urls.get` as a prediction input. It expires after `files_retention_s`."""
    settings = app_state(request).settings
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException as exc:  # Starlette's 400 for a malformed multipart body or too many parts
        raise InvalidInput(f"body: {exc.detail}", field="body") from None
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise InvalidInput("content: send the file as multipart/form-data in the `content` field", field="content")
        data = await content.read()
        name = _text(form.get("filename")) or content.filename
        kind = _text(form.get("type")) or content.content_type
        metadata = files.parse_metadata(_text(form.get("metadata")))
    finally:
        await form.close()
    f = await files.upload(db, ctx, settings, name=name, content_type=kind, data=data, metadata=metadata)
    return FileRead.of(f, base_url(request))


@router.get("/files", **requires("files.list"))
async def list_files(
    ctx: Tenant, db: DB, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CursorPage[FileRead]:
    """The organization's files that have not expired, newest first."""
    rows = await files.page(db, ctx, limit=limit, after=decode_cursor(cursor))
    base = base_url(request)
    page = Page[FileRead].of(rows, limit, lambda f: FileRead.of(f, base))
    return CursorPage[FileRead].of(page, page_urls(request, "/v1/files", limit))


@router.get("/files/{file_id}", **requires("files.read", NOT_FOUND))
async def get_file(file_id: UUID, ctx: Tenant, db: DB, request: Request) -> FileRead:
    return FileRead.of(await files.get(db, ctx, file_id), base_url(request))


@router.get(
    "/files/{file_id}/download",
    response_class=Response,
    **requires("files.read", {**NOT_FOUND, 200: {"description": "The file's bytes.", "content": {"*/*": {}}}}),
)
async def download_file(file_id: UUID, ctx: Tenant, db: DB) -> Response:
    """The file's bytes, with its content type and name."""
    f, data = await files.download(db, ctx, file_id)
    fallback = f.name.encode("ascii", "replace").decode().replace("\\", "_").replace('"', "_")
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(f.name, safe='')}"
    return Response(
        content=data,
        media_type=f.content_type,
        headers={"ETag": f'"{f.sha256}"', "Content-Disposition": disposition},
    )


@router.delete("/files/{file_id}", status_code=204, **requires("files.delete", NOT_FOUND))
async def delete_file(file_id: UUID, ctx: Tenant, db: DB) -> Response:
    await files.delete(db, ctx, file_id)
    return Response(status_code=204)
