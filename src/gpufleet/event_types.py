"""The registry of event types: every event gpufleet records, documented once.

docs/events.md is generated from this table (``python -m gpufleet.event_types > docs/events.md``;
a test keeps the two equal), webhook subscriptions are checked against it, and a test fails when
the code writes an event type that is not here. ``admin`` marks the notifications an operator
wants pushed (``gpufleet up --notify-stderr`` prints them; any admin's webhook can subscribe).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from gpufleet.domain.hosts import GpuStatus, HostStatus
from gpufleet.domain.jobs import JobStatus

PATTERN = re.compile(r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$")


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    when: str
    payload: dict[str, str] = field(default_factory=dict)
    admin: bool = False

    @property
    def entity(self) -> str:
        return self.name.split(".", 1)[0]


_TRANSITION = {
    "from": "string: the status before",
    "to": "string: the status after",
    "reason": "string | null: why, in words",
}
_JOB = {**_TRANSITION, "attempt": "integer: the job's attempt number"}

_JOB_WHEN = {
    JobStatus.PENDING: "a job went back to the queue (`job.requeued` names a requeue after host loss or a retry)",
    JobStatus.ALLOCATED: "the scheduler placed a job on GPUs (set-based; `data` has `host_id`, `gpu_ids`)",
    JobStatus.RUNNING: "the agent started the job's process",
    JobStatus.SUCCEEDED: "the job's process exited 0",
    JobStatus.FAILED: "the job's process exited non-zero or could not start",
    JobStatus.CANCELLED: "a cancelled job stopped (or was cancelled before it ran)",
    JobStatus.TIMED_OUT: "the job ran past its max_runtime_s and was stopped",
    JobStatus.ALLOCATION_FAILED: "no host of the organization could ever hold the job",
}
_HOST_WHEN = {
    HostStatus.READY: "a host is back: undrained, out of maintenance, or heartbeating again after being unreachable",
    HostStatus.UNREACHABLE: "a host missed heartbeats for longer than the timeout (judged by the database clock)",
    HostStatus.DRAINING: "an admin drained a host: it takes no new work",
    HostStatus.MAINTENANCE: "an admin put a host in maintenance",
}
_GPU_WHEN = {
    GpuStatus.AVAILABLE: "a GPU is usable again (health cleared, out of maintenance, back online)",
    GpuStatus.ALLOCATED: "a GPU's status became allocated",
    GpuStatus.UNHEALTHY: "the agent reported a GPU unhealthy (XID errors, temperature over the limit, lost)",
    GpuStatus.OFFLINE: "a GPU disappeared from its host's inventory, or its host was removed",
    GpuStatus.MAINTENANCE: "an admin put a GPU in maintenance",
}
_ADMIN = {"job.allocation_failed", "host.unreachable", "gpu.unhealthy"}

_TYPES: list[EventType] = [
    EventType(
        "organization.created",
        "an organization was created",
        {"name": "string", "slug": "string (absent at first run)"},
    ),
    EventType(
        "organization.updated",
        "an admin changed the organization's name or slug",
        {"name": "string", "settings_changed": "boolean"},
    ),
    EventType("member.joined", "someone accepted an invite", {"invite_id": "uuid", "role": "string"}),
    EventType("member.role_changed", "an admin changed a member's role", {"from": "string", "to": "string"}),
    EventType("member.removed", "a member was removed or left", {"role": "string"}),
    EventType("invite.created", "an admin invited someone", {"email": "string", "role": "string"}),
    EventType("invite.revoked", "an admin revoked an invite"),
    EventType("api_key.created", "an API key was issued", {"name": "string", "role": "string"}),
    EventType("api_key.revoked", "an API key was revoked"),
    EventType(
        "join_token.created",
        "an admin created a host join token",
        {"token_id": "uuid", "name": "string", "prefix": "string", "max_uses": "integer | null"},
    ),
    EventType("join_token.revoked", "an admin revoked a host join token"),
    EventType("quota.set", "an admin set a quota", {"gpu_model": "string | null", "max_gpus": "integer"}),
    EventType(
        "price.set",
        "an admin set a price (per GPU-hour of a model, per CPU core-hour or per RAM GiB-hour), from a time on",
        {
            "kind": "string: gpu, cpu or ram",
            "gpu_model": "string | null",
            "host_id": "uuid | null: the host the price is limited to",
            "hourly_price": "string: a decimal",
            "currency": "string",
            "effective_from": "string: ISO 8601 time",
        },
    ),
    EventType(
        "budget.set",
        "an admin set (or replaced) a budget",
        {
            "budget_id": "uuid",
            "amount": "string: a decimal",
            "period": "string: day, week, month or custom",
            "period_days": "integer | null: the length of a custom period",
            "hard": "boolean: refuses work that would overspend",
            "stop_running": "boolean: cancels running work at 100%",
        },
    ),
    EventType("budget.deleted", "an admin removed a budget", {"budget_id": "uuid"}),
    EventType(
        "budget.threshold",
        "a budget's spend reached 50, 80 or 100% of it in this period (each once per period)",
        {
            "budget_id": "uuid",
            "threshold_pct": "integer: 50, 80 or 100",
            "spent": "string: a decimal, to the cent",
            "budget": "string: a decimal, to the cent",
            "currency": "string",
            "period": "string",
            "period_days": "integer | null",
            "period_start": "string: ISO 8601 time",
            "scope": "string: the organization, a user or a label",
            "hard": "boolean",
        },
        admin=True,
    ),
    EventType("quota.deleted", "an admin removed a quota", {"gpu_model": "string | null", "max_gpus": "integer"}),
    EventType(
        "job.submitted",
        "a job was submitted",
        {
            "to": "pending",
            "attempt": "integer",
            "gpu_count": "integer",
            "gpu_milli": "integer",
            "gpu_models": "array of string",
        },
    ),
    EventType(
        "job.cancel_requested", "a running job was asked to stop", {"attempt": "integer", "host_id": "uuid | null"}
    ),
    EventType("job.requeued", "a job went back to the queue after its host was lost (or to retry)", _JOB),
    *(EventType(f"job.{s.value}", w, _JOB, admin=f"job.{s.value}" in _ADMIN) for s, w in _JOB_WHEN.items()),
    EventType(
        "allocation.created", "GPUs were reserved for a job", {"job_id": "uuid", "gpu_id": "uuid", "milli": "integer"}
    ),
    EventType(
        "allocation.conflict",
        "a placement lost a race for capacity (another writer took the GPU first); `outcome` says whether "
        "it is retried at once or waits for the next cycle",
        {"job_id": "uuid", "host_id": "uuid", "gpu_ids": "array of uuid", "error": "string", "outcome": "string"},
        admin=True,
    ),
    EventType(
        "host.registered",
        "a host registered with a join token",
        {
            "name": "string",
            "join_token_id": "uuid",
            "gpus": "integer",
            "simulated": "boolean",
            "reregistered": "boolean",
        },
    ),
    *(EventType(f"host.{s.value}", w, _TRANSITION, admin=f"host.{s.value}" in _ADMIN) for s, w in _HOST_WHEN.items()),
    EventType("host.revoked", "an admin revoked a host's credential"),
    EventType("host.removed", "an admin removed a host"),
    EventType(
        "gpu.added",
        "a host reported a GPU not seen before",
        {"uuid": "string", "index": "integer", "model": "string", "memory_mb": "integer"},
    ),
    *(EventType(f"gpu.{s.value}", w, _TRANSITION, admin=f"gpu.{s.value}" in _ADMIN) for s, w in _GPU_WHEN.items()),
    EventType(
        "gpu.foreign_usage",
        "a GPU shows memory used by processes gpufleet did not start",
        {"foreign_usage": "object: memory_mb and processes seen"},
    ),
    EventType("webhook.created", "an admin created a webhook", {"url": "string", "event_types": "array of string"}),
    EventType("webhook.updated", "an admin changed a webhook", {"fields": "array of string"}),
    EventType("webhook.deleted", "an admin deleted a webhook", {"url": "string"}),
    EventType("webhook.secret_rotated", "a webhook's signing secret was rotated", {"overlap_s": "integer"}),
    EventType(
        "webhook.disabled",
        "gpufleet disabled a webhook: the receiver answered 410 Gone, or every delivery failed for 5 days",
        {"url": "string", "reason": "string"},
        admin=True,
    ),
    *(
        EventType(
            f"prediction.{name}",
            when,
            {
                "status": "string: the prediction's status now",
                "model": "string: owner/name",
                "version": "string: the version id",
                "deployment_id": "uuid",
                "replica_id": "uuid | null: the replica that ran it",
                "error": "string (failed only)",
                "predict_time": "number (when ended by its worker)",
            },
        )
        for name, when in (
            ("created", "a prediction was queued"),
            ("started", "a replica claimed a prediction: it is processing"),
            ("succeeded", "a prediction ended with its output"),
            ("failed", "a prediction failed (its error says why: the model, its replica's end, a deleted deployment)"),
            ("canceled", "a prediction was canceled (while queued, or stopped by its worker)"),
        )
    ),
    EventType(
        "deployment.created",
        "a deployment was created (an explicit one, or a model's own on its first prediction)",
        {"name": "string", "release": "integer", "version": "string", "model": "string"},
    ),
    EventType(
        "deployment.updated",
        "a deployment changed; a new version or hardware is a new release, rolled out replica by replica",
        {"name": "string", "release": "integer", "version": "string", "fields": "array of string"},
    ),
    EventType("deployment.deleted", "a deployment was deleted", {"name": "string", "release": "integer"}),
    EventType(
        "replica.created",
        "a replica was started (its job is queued for the scheduler)",
        {"deployment_id": "uuid", "job_id": "uuid", "version_id": "uuid", "release": "integer"},
    ),
    EventType(
        "replica.ready",
        "a replica's worker finished setup(): it takes predictions",
        {
            "deployment_id": "uuid",
            "job_id": "uuid",
            "environment_s": "number | null",
            "environment_cached": "boolean | null",
            "setup_s": "number | null",
        },
    ),
    EventType("replica.failed", "a replica's setup failed", {"deployment_id": "uuid", "error": "string"}),
    EventType(
        "replica.draining",
        "a replica takes no new predictions and exits once idle (scaled down, or replaced by a new release)",
        {"deployment_id": "uuid", "job_id": "uuid", "reason": "string"},
    ),
    EventType(
        "replica.stopped",
        "a replica's job ended; the predictions it was running failed",
        {
            "deployment_id": "uuid",
            "job_id": "uuid",
            "job_status": "string",
            "reason": "string | null",
            "failed_predictions": "integer",
            "crashed": "boolean: an end nobody asked for (restarts back off)",
            "failures": "integer | null: crashes in a row",
        },
    ),
    EventType(
        "model.created",
        "an admin created a model",
        {"name": "string", "hardware": "object: gpu_count, gpu_milli, min_memory_mb, label"},
    ),
    EventType(
        "model.updated",
        "an admin changed a model's description or hardware",
        {"name": "string", "fields": "array of string"},
    ),
    EventType("model.deleted", "an admin deleted a model and its versions", {"name": "string"}),
    EventType(
        "model.version_created",
        "a new version was pushed (pushing content seen before records nothing)",
        {"name": "string", "version": "string: the digest", "archive_size": "integer", "is_generator": "boolean"},
    ),
    EventType("model.version_deleted", "an admin deleted a version", {"name": "string", "version": "string"}),
    EventType(
        "webhook.test",
        "`POST /v1/webhooks/{id}/test`: a ping sent to that webhook only (never recorded in the events list)",
        {"message": "string"},
    ),
]

REGISTRY: dict[str, EventType] = {t.name: t for t in _TYPES}
ADMIN_TYPES: frozenset[str] = frozenset(t.name for t in _TYPES if t.admin)


def matches(pattern: str, event_type: str) -> bool:
    """The subscription rule, the same as SQL's ``gpufleet_webhook_matches``."""
    if pattern in ("*", event_type):
        return True
    return pattern.endswith(".*") and event_type.startswith(pattern[:-1])


def check_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable subscription, or None when it is."""
    if not PATTERN.match(pattern):
        return "expected an event type, a prefix ending in '.*' (e.g. 'job.*') or '*'"
    if not any(matches(pattern, name) for name in REGISTRY):
        return "matches no event type gpufleet records (see docs/events.md)"
    return None


def markdown() -> str:
    """docs/events.md."""
    out = [
        "# Events",
        "",
        "<!-- Generated by `python -m gpufleet.event_types > docs/events.md`; edit src/gpufleet/event_types.py. -->",
        "",
        "Every state change gpufleet makes writes one event row in the same transaction (the outbox):",
        "`GET /v1/events` lists them and webhooks deliver them (docs/webhooks.md). An event has",
        "`seq` (its position), `type`, `entity_type`, `entity_id`, `actor`, `created_at` and `data`;",
        "the *payload* column below is `data`. Webhook deliveries carry it as `data.payload`.",
        "`actor` says who caused it, in one format for every type: `user:<id>` for a member (through",
        "the API, the CLI or the dashboard), `host:<name>` for a host's agent, the part of the server",
        "for its own work (`scheduler`, `liveness`, `costs`, ...), or null.",
        "",
        "Types marked **admin** are the operator notifications: `gpufleet up --notify-stderr` prints",
        "them, and an admin's webhook subscribes to them like any other (e.g. `host.unreachable`).",
        "A subscription to a prefix that matches no type is refused.",
        "",
    ]
    by_entity: dict[str, list[EventType]] = {}
    for t in _TYPES:
        by_entity.setdefault(t.entity, []).append(t)
    for entity, types in by_entity.items():
        out += [f"## {entity}", "", "| type | when | payload |", "|---|---|---|"]
        for t in types:
            payload = "; ".join(f"`{k}` {v}" for k, v in t.payload.items()) or "-"
            flag = " **admin**" if t.admin else ""
            out.append(f"| `{t.name}`{flag} | {t.when} | {payload} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
