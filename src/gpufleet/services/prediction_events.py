"""The events of predictions, replicas and deployments, written in the transaction of the change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpufleet.db.pool import Connection as Conn
from gpufleet.domain.predictions import Deployment, Prediction, Replica
from gpufleet.repo import events as events_repo
from gpufleet.repo import orgs as orgs_repo
from gpufleet.repo import prediction_webhooks as hooks_repo
from gpufleet.repo import predictions as predictions_repo
from gpufleet.repo import webhook_deliveries as deliveries_repo

WEBHOOK_THROTTLE_S = 0.5  # output and logs webhooks of one prediction: at most one per this

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
    """One ``prediction.<created|started|succeeded|failed|canceled>`` event per prediction, by its
    status now; and their webhooks (``start`` on creation, ``completed`` at the end)."""
    rows = [(p.organization_id, "prediction", p.id, EVENT_OF[p.status.value], _data(p)) for p in moved]
    await events_repo.append_many(conn, rows, actor=actor)
    for p in moved:
        if p.webhook and (p.done or p.status.value == "starting"):
            await webhook(conn, p, "completed" if p.done else "start")


async def webhook(conn: Conn, p: Prediction, kind: str, *, throttle: bool = False) -> bool:
    """A delivery of the prediction as it is now to its own ``webhook`` URL, when its filter takes
    ``kind``; ``throttle``: at most one per ``WEBHOOK_THROTTLE_S`` (output and logs). Whether one was queued."""
    if not p.webhook or kind not in p.webhook_events_filter:
        return False
    org_id = p.organization_id
    if throttle and not await hooks_repo.claim_throttle(
        conn, org_id=org_id, prediction_id=p.id, every_s=WEBHOOK_THROTTLE_S
    ):
        return False
    now = await predictions_repo.get(conn, org_id=org_id, prediction_id=p.id)
    org = await orgs_repo.get(conn, org_id=org_id)
    if now is None or org is None:
        return False
    await deliveries_repo.create_for_prediction(
        conn,
        org_id=org_id,
        prediction_id=p.id,
        url=p.webhook,
        event_type=f"prediction.webhook.{kind}",
        payload=now.as_replicate(org.slug),
    )
    return True


async def replica_event(conn: Conn, replica: Replica, type: str, *, actor: str | None, **data: Any) -> None:
    await events_repo.append(
        conn,
        replica.organization_id,
        "replica",
        replica.id,
        type,
        {
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
        d.organization_id,
        "deployment",
        d.id,
        type,
        {"name": d.name, "release": d.release, "version": d.digest, **data},
        actor=actor,
    )
