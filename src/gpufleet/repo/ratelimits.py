"""Shared rate-limit counters: each replica flushes its counts and reads back the totals."""

from __future__ import annotations

from datetime import datetime

from gpufleet.db.pool import Connection as Conn


async def add_and_read(
    conn: Conn, *, buckets: list[str], windows: list[datetime], deltas: list[int]
) -> dict[tuple[str, datetime], int]:
    rows = await conn.fetch(
        """insert into rate_limit_counters (bucket, window_start, count)
           select * from unnest($1::text[], $2::timestamptz[], $3::bigint[])
           on conflict (bucket, window_start) do update set count = rate_limit_counters.count + excluded.count
           returning bucket, window_start, count""",
        buckets,
        windows,
        deltas,
    )
    return {(r["bucket"], r["window_start"]): int(r["count"]) for r in rows}


async def prune(conn: Conn, *, before: datetime) -> None:
    await conn.execute("delete from rate_limit_counters where window_start < $1", before)
