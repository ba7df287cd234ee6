"""Files (prediction inputs and outputs): every SQL statement about the ``files`` table. Reads
leave the bytes out; ``get_data`` fetches them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.models import FileRecord
from gpufleet.repo import keyset
from gpufleet.repo.rows import mapper

_COLUMNS = """id, organization_id, name, content_type, size, sha256, metadata, prediction_id, created_by,
    expires_at, created_at"""


_file = mapper(FileRecord)


async def create(
    conn: Conn,
    *,
    org_id: UUID,
    name: str,
    content_type: str,
    data: bytes,
    sha256: str,
    metadata: dict[str, Any],
    expires_in_s: float,
    prediction_id: UUID | None = None,
    created_by: UUID | None = None,
) -> FileRecord:
    """Store a file that expires ``expires_in_s`` after now (the database's clock)."""
    row = await conn.fetchrow(
        f"""insert into files (organization_id, name, content_type, size, sha256, data, metadata, prediction_id,
                               created_by, expires_at)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
            returning {_COLUMNS}""",
        org_id,
        name,
        content_type,
        len(data),
        sha256,
        data,
        metadata,
        prediction_id,
        created_by,
        float(expires_in_s),
    )
    assert row is not None
    return _file(row)


async def get(conn: Conn, *, org_id: UUID, file_id: UUID) -> FileRecord | None:
    """The file, unless it is gone or expired (an expired file is gone even before the sweep)."""
    row = await conn.fetchrow(
        f"select {_COLUMNS} from files where organization_id = $1 and id = $2 and expires_at > now()",
        org_id,
        file_id,
    )
    return _file(row) if row else None


async def get_data(conn: Conn, *, org_id: UUID, file_id: UUID) -> tuple[FileRecord, bytes] | None:
    row = await conn.fetchrow(
        f"select {_COLUMNS}, data from files where organization_id = $1 and id = $2 and expires_at > now()",
        org_id,
        file_id,
    )
    return (_file(row), bytes(row["data"])) if row else None


async def page(conn: Conn, *, org_id: UUID, limit: int, after: tuple[datetime, UUID] | None) -> list[FileRecord]:
    """Newest first: ``limit + 1`` files at most past ``after`` (``keyset.page``); expired ones are left out."""
    sql = f"select {_COLUMNS} from files where organization_id = $1 and expires_at > now()"
    return [_file(r) for r in await keyset.page(conn, sql, org_id, after=after, limit=limit)]


async def of_prediction(conn: Conn, *, org_id: UUID, prediction_id: UUID) -> list[FileRecord]:
    rows = await conn.fetch(
        f"""select {_COLUMNS} from files where organization_id = $1 and prediction_id = $2
             order by created_at, id""",
        org_id,
        prediction_id,
    )
    return [_file(r) for r in rows]


async def delete(conn: Conn, *, org_id: UUID, file_id: UUID) -> bool:
    done = await conn.fetchval(
        "delete from files where organization_id = $1 and id = $2 returning true", org_id, file_id
    )
    return bool(done)


async def delete_expired(conn: Conn, *, limit: int) -> int:
    """Delete up to ``limit`` expired files of every tenant, oldest expiry first (system path)."""
    deleted: int = await conn.fetchval(
        """with gone as (
               delete from files where id in (
                   select id from files where expires_at <= now() order by expires_at limit $1
                   for update skip locked)
               returning 1)
           select count(*) from gone""",
        limit,
    )
    return deleted
