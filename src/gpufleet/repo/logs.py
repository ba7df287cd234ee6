"""Job logs: stored chunks (``job_logs``, bytea) and their per-attempt counters (``job_attempts``)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.execution import LogEntry

LOGS_CHANNEL = "gpufleet_job_logs"


async def insert_chunks(
    conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, rows: Sequence[tuple[int, str, int, bytes]]
) -> int:
    """Insert ``(seq, stream, offset, data)`` rows in one statement; a seq already stored is skipped."""
    if not rows:
        return 0
    seqs, streams, offsets, data = (list(col) for col in zip(*rows, strict=True))
    status = await conn.execute(
        """insert into job_logs (organization_id, job_id, attempt, seq, stream, byte_offset, data)
           select $1, $2, $3, s, st, o, d
             from unnest($4::int[], $5::text[], $6::bigint[], $7::bytea[]) as u(s, st, o, d)
           on conflict (job_id, attempt, seq) do nothing""",
        org_id,
        job_id,
        attempt,
        seqs,
        streams,
        offsets,
        data,
    )
    return int(status.rsplit(" ", 1)[-1])


async def save_counters(
    conn: Conn,
    *,
    org_id: UUID,
    job_id: UUID,
    attempt: int,
    next_seq: int,
    log_bytes: int,
    truncated: bool,
    ends: dict[str, int],
) -> None:
    await conn.execute(
        """update job_attempts
              set log_next_seq = $4, log_bytes = $5, log_truncated = $6,
                  stdout_end = $7, stderr_end = $8, system_end = $9
            where organization_id = $1 and job_id = $2 and attempt = $3""",
        org_id,
        job_id,
        attempt,
        next_seq,
        log_bytes,
        truncated,
        ends["stdout"],
        ends["stderr"],
        ends["system"],
    )


async def read(
    conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, after_seq: int, limit_bytes: int, limit_chunks: int
) -> list[LogEntry]:
    """Chunks after ``after_seq`` in order, until ``limit_bytes`` (always at least one chunk)."""
    rows = await conn.fetch(
        """select seq, stream, byte_offset, data, created_at from (
                select seq, stream, byte_offset, data, created_at,
                       sum(octet_length(data)) over (order by seq) - octet_length(data) as before
                  from job_logs
                 where organization_id = $1 and job_id = $2 and attempt = $3 and seq > $4) t
            where before < $5 or seq = (select min(seq) from job_logs
                                         where organization_id = $1 and job_id = $2 and attempt = $3 and seq > $4)
            order by seq
            limit $6""",
        org_id,
        job_id,
        attempt,
        after_seq,
        limit_bytes,
        limit_chunks,
    )
    return [LogEntry(attempt, r["seq"], r["stream"], r["byte_offset"], bytes(r["data"]), r["created_at"]) for r in rows]


async def has_after(conn: Conn, *, org_id: UUID, job_id: UUID, attempt: int, after_seq: int) -> bool:
    return bool(
        await conn.fetchval(
            """select exists (select 1 from job_logs
                               where organization_id = $1 and job_id = $2 and attempt = $3 and seq > $4)""",
            org_id,
            job_id,
            attempt,
            after_seq,
        )
    )


async def notify(conn: Conn) -> None:
    """Wake log followers at commit (one notification per transaction, however many chunks).

    No payload: any runtime-role session can LISTEN, so a job id would reach other tenants.
    The listener finds out which followed jobs changed with ``follow_marks``.
    """
    await conn.execute("select pg_notify($1, '')", LOGS_CHANNEL)


async def follow_marks(conn: Conn, *, job_ids: Sequence[UUID]) -> dict[UUID, tuple[str, int, int]]:
    """System path: per job, what its log followers wait for to change (status, attempt, chunks stored)."""
    rows = await conn.fetch(
        """select j.id, j.status, j.attempt,
                  coalesce((select sum(a.log_next_seq) from job_attempts a where a.job_id = j.id), 0) as chunks
             from jobs j where j.id = any($1::uuid[])""",
        list(job_ids),
    )
    return {r["id"]: (r["status"], r["attempt"], int(r["chunks"])) for r in rows}
