"""The one keyset-paginated read every list uses (``gpufleet.pagination`` holds the cursor side)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from gpufleet.db.pool import Connection as Conn

CREATED = ("created_at", "id")
CREATED_TYPES = ("timestamptz", "uuid")


async def page(
    conn: Conn,
    select: str,
    *args: Any,
    after: Sequence[Any] | None,
    limit: int,
    key: Sequence[str] = CREATED,
    types: Sequence[str] = CREATED_TYPES,
    ascending: bool = False,
    bound: str | None = None,
) -> list[asyncpg.Record]:
    """``limit + 1`` rows of ``select`` (a statement ending in a WHERE clause over ``args``, $1..$n)
    past the key ``after`` in the order of the ``key`` columns: newest first unless ``ascending``.

    ``after`` holds one value per entry of ``types``; by default those are the ``key`` columns'
    values, compared as a row. ``bound`` instead names the row to compare against, an SQL
    expression with ``{}`` where each of those values goes (a sub-select by id, say).
    """
    first = len(args) + 1
    params = [f"${first + i}::{t}" for i, t in enumerate(types)]
    row = bound.format(*params) if bound else f"({', '.join(params)})"
    sign, order = (">", "") if ascending else ("<", " desc")
    sql = (
        f"{select} and ({params[0]} is null or ({', '.join(key)}) {sign} {row})"
        f" order by {', '.join(k + order for k in key)} limit ${first + len(types)}"
    )
    values = list(after) if after is not None else [None] * len(types)
    return list(await conn.fetch(sql, *args, *values, limit + 1))
