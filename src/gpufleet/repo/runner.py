"""What the agent routes of the Model Runner read beyond models and files: every SQL statement of
api/routes/agent_models.py's checks."""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Connection as Conn


async def prediction_on_host(conn: Conn, *, org_id: UUID, prediction_id: UUID, host_id: UUID) -> bool:
    """The prediction runs (or ran) on a replica whose job is on ``host_id`` now."""
    found = await conn.fetchval(
        """select true from predictions p
             join replicas r on r.id = p.replica_id and r.organization_id = p.organization_id
             join jobs j on j.id = r.job_id and j.organization_id = r.organization_id
            where p.organization_id = $1 and p.id = $2 and j.host_id = $3""",
        org_id,
        prediction_id,
        host_id,
    )
    return bool(found)
