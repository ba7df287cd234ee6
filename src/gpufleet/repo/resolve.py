"""Short ids: which of the organization's rows have an id starting with a given prefix.

A prefix is matched as a range of the uuid primary key (``prefix000...`` to ``prefixfff...``),
so the lookup is an index range scan, not a text match over every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from gpufleet.db.pool import Connection as Conn


@dataclass(frozen=True, slots=True)
class IdMatch:
    id: UUID
    label: str  # what a person recognises the row by (a name, a model, an email)


# One fixed statement per kind (never built from input): the table, its tenant column and a label.
_QUERIES: dict[str, str] = {
    "job": "select id, name as label from jobs where organization_id = $1 and id between $2 and $3",
    "host": "select id, name as label from hosts where organization_id = $1 and id between $2 and $3",
    "gpu": """select g.id, h.name || ' #' || g.index || ' ' || g.model as label
                from gpu_resources g join hosts h on h.id = g.host_id
               where g.organization_id = $1 and g.id between $2 and $3""",
    "key": """select id, name || ' (' || prefix || ')' as label from api_keys
               where organization_id = $1 and id between $2 and $3 and ($5::uuid is null or user_id = $5)""",
    "join_token": """select id, coalesce(nullif(name, ''), prefix) as label from join_tokens
                      where organization_id = $1 and id between $2 and $3""",
    "invite": """select id, email as label from organization_invites
                  where organization_id = $1 and id between $2 and $3""",
    "quota": """select id, coalesce(gpu_model, 'all GPUs') as label from quotas
                 where organization_id = $1 and id between $2 and $3""",
}
KINDS = tuple(_QUERIES)


async def by_prefix(
    conn: Conn, *, org_id: UUID, kind: str, low: UUID, high: UUID, limit: int, owner: UUID | None = None
) -> list[IdMatch]:
    """Rows of ``kind`` whose id lies in [low, high], in id order; ``owner`` narrows API keys to one user's."""
    sql = _QUERIES[kind] + " order by id limit $4"
    args: list[object] = [org_id, low, high, limit]
    if kind == "key":
        args.append(owner)
    rows = await conn.fetch(sql, *args)
    return [IdMatch(r["id"], r["label"] or "") for r in rows]
