"""File use cases: uploads for prediction inputs (Replicate's files API), reads, downloads and
deletes, each in the caller's organization; files expire (``files_retention_s``) and are swept."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.models import FileRecord
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput, NotFound, PayloadTooLarge
from gpufleet.repo import files as repo

CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
MAX_METADATA_BYTES = 64 * 1024
DEFAULT_NAME = "file"


def clean_name(name: str | None) -> str:
    """The file's base name, without directories or control characters, at most 255 characters."""
    base = posixpath.basename((name or "").replace("\\", "/"))
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:255] or DEFAULT_NAME


def clean_content_type(value: str | None) -> str:
    kind = (value or "").split(";", 1)[0].strip().lower()
    return kind if CONTENT_TYPE_RE.match(kind) else "application/octet-stream"


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The ``metadata`` form field: a JSON object, at most 64 KiB."""
    if raw is None or raw == "":
        return {}
    if len(raw.encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata: at most {MAX_METADATA_BYTES // 1024} KiB", field="metadata")
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInput("metadata: not JSON", field="metadata") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata: must be a JSON object", field="metadata")
    if "\\u0000" in raw:
        raise InvalidInput("metadata: must not contain NUL characters", field="metadata")
    return value


async def upload(
    db: Database,
    ctx: TenantContext,
    settings: Settings,
    *,
    name: str | None,
    content_type: str | None,
    data: bytes,
    metadata: dict[str, Any] | None = None,
) -> FileRecord:
    """Store a file in ``ctx``'s organization, made by its user."""
    org_id, created_by = ctx.org_id, ctx.user_id
    if len(data) > settings.files_max_bytes:
        raise PayloadTooLarge(f"content: a file is at most {settings.files_max_bytes} bytes")
    async with db.transaction(org_id, user_id=created_by) as conn:
        return await repo.create(
            conn,
            org_id=org_id,
            name=clean_name(name),
            content_type=clean_content_type(content_type),
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            metadata=metadata or {},
            expires_in_s=settings.files_retention_s,
            created_by=created_by,
        )


def _missing(file_id: UUID) -> NotFound:
    return NotFound(f"file {file_id} not found (or expired)")


async def get(db: Database, ctx: TenantContext, file_id: UUID) -> FileRecord:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        f = await repo.get(conn, org_id=org_id, file_id=file_id)
    if f is None:
        raise _missing(file_id)
    return f


async def download(db: Database, ctx: TenantContext, file_id: UUID) -> tuple[FileRecord, bytes]:
    """The file and its bytes, in ``ctx``'s organization."""
    async with db.transaction(ctx.org_id) as conn:
        found = await repo.get_data(conn, org_id=ctx.org_id, file_id=file_id)
    if found is None:
        raise _missing(file_id)
    return found


async def page(
    db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[FileRecord]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await repo.page(conn, org_id=org_id, limit=limit, after=after)


async def delete(db: Database, ctx: TenantContext, file_id: UUID) -> None:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        if not await repo.delete(conn, org_id=org_id, file_id=file_id):
            raise _missing(file_id)
