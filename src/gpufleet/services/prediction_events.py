"""The events of predictions, replicas and deployments, written in the transaction of the change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpufleet.db.pool import Connection as Conn
from gpufleet.inference.predictions_domain import Deployment, Prediction, Replica
from gpufleet.repo import events as events_repo

# A prediction's status -> the event its arrival there writes.
EVENT_OF = {
    "starting": "prediction.created",
    "processing": "prediction.started",
    "succeeded": "prediction.succeeded",
    "failed": "prediction.failed",
    "canceled": "prediction.canceled",
}


def _data(p: Prediction) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": p.status.value,
        "model": p.model,
        "version": p.version,
        "deployment_id": str(p.deployment_id) if p.deployment_id else None,
        "replica_id": str(p.replica_id) if p.replica_id else None,
    }
    if p.error:
        data["error"] = p.error[:2000]
    if "predict_time" in p.metrics:
        data["predict_time"] = p.metrics["predict_time"]
    return data


async def predictions_moved(conn: Conn, moved: Sequence[Prediction], *, actor: str | None) -> None:
    """One ``prediction.<created|started|succeeded|failed|canceled>`` event per prediction, by its status now."""
    rows = [(p.organization_id, "prediction", p.id, EVENT_OF[p.status.value], _data(p)) for p in moved]
    await events_repo.append_many(conn, rows, actor=actor)


async def replica_event(conn: Conn, replica: Replica, type: str, *, actor: str | None, **data: Any) -> None:
    await events_repo.append(
        conn,
        org_id=replica.organization_id,
        entity_type="replica",
        entity_id=replica.id,
        type=type,
        data={
            "deployment_id": str(replica.deployment_id),
            "job_id": str(replica.job_id),
            "version_id": str(replica.version_id),
            **data,
        },
        actor=actor,
    )


async def deployment_event(conn: Conn, d: Deployment, type: str, *, actor: str | None, **data: Any) -> None:
    await events_repo.append(
        conn,
        org_id=d.organization_id,
        entity_type="deployment",
        entity_id=d.id,
        type=type,
        data={"name": d.name, "release": d.release, "version": d.digest, **data},
        actor=actor,
    )
