"""The event-type registry: docs/events.md is generated from it, and every type the code writes is in it.
Also the events' retention and the admin notifications printed by `gpufleet up --notify-stderr`."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

from gpufleet.background import events_retention
from gpufleet.background.notify import StderrNotifier
from gpufleet.db.pool import Database
from gpufleet.event_types import ADMIN_TYPES, REGISTRY, check_pattern, markdown, matches
from gpufleet.repo import events
from tests.api.conftest import make_tenant

ROOT = Path(__file__).resolve().parents[2]
ENTITIES = "job|host|gpu|allocation|quota|budget|member|api_key|webhook|organization|invite|join_token|prediction"
LITERAL = re.compile(rf"""["']((?:{ENTITIES})\.[a-z_]+)["']""")
DYNAMIC = re.compile(rf"""f["']((?:{ENTITIES}))\.\{{""")


def test_docs_events_md_is_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "events.md").read_text() == markdown(), (
        "docs/events.md is stale: python -m gpufleet.event_types > docs/events.md"
    )


def test_every_event_type_written_by_the_code_is_registered() -> None:
    written: set[str] = set()
    dynamic: set[str] = set()
    for path in (ROOT / "src" / "gpufleet").rglob("*.py"):
        if path.name in ("event_types.py", "permissions.py") or "cli" in path.parts or "agent" in path.parts:
            continue
        text = path.read_text()
        written |= {m for m in LITERAL.findall(text) if not m.endswith("_")}
        dynamic |= set(DYNAMIC.findall(text))
    assert written, "the scan found nothing: the pattern is broken"
    missing = sorted(t for t in written if t not in REGISTRY)
    assert missing == [], f"event types written but not in gpufleet/event_types.py: {missing}"
    for entity in dynamic:  # f"job.{status}": each status of the enum must be registered
        assert any(name.startswith(f"{entity}.") for name in REGISTRY), entity
    for name in ("job.succeeded", "host.unreachable", "gpu.unhealthy", "webhook.disabled", "allocation.conflict"):
        assert name in REGISTRY
    assert {"job.allocation_failed", "host.unreachable", "gpu.unhealthy", "allocation.conflict"} <= ADMIN_TYPES


def test_patterns() -> None:
    assert matches("job.*", "job.succeeded") and matches("*", "host.ready") and matches("job.failed", "job.failed")
    assert not matches("job.*", "jobs.x") and not matches("job_x.*", "jobaxb.y")
    assert check_pattern("job.*") is None and check_pattern("*") is None
    assert check_pattern("prediction.*") is None
    assert "matches no event type" in (check_pattern("training.*") or "")
    assert "expected" in (check_pattern("job.*.*") or "")


async def test_retention_deletes_old_events_in_batches(db: Database) -> None:
    t = await make_tenant(db)
    async with db.system_transaction() as conn:
        rows = [(t.org.id, "job", uuid.uuid4(), "job.submitted", {}) for _ in range(25)]
        await events.append_many(conn, rows)
        await conn.execute(
            "update events set created_at = now() - interval '31 days' where type = 'job.submitted' and organization_id = $1",
            t.org.id,
        )
        await events.append(conn, org_id=t.org.id, entity_type="job", entity_id=uuid.uuid4(), type="job.submitted")
        before = await conn.fetchval("select count(*) from events where organization_id = $1", t.org.id)
    deleted, _ = await events_retention.run_once(db, retention_days=30, batch=10)
    assert deleted == 25
    async with db.system_transaction() as conn:
        assert await conn.fetchval("select count(*) from events where organization_id = $1", t.org.id) == before - 25


async def test_admin_notifications_on_stderr(db: Database) -> None:
    t = await make_tenant(db)
    out = io.StringIO()
    notifier = StderrNotifier(db, out)
    await notifier.run_once()  # from now on
    host = uuid.uuid4()
    async with db.system_transaction() as conn:
        await events.append(
            conn,
            org_id=t.org.id,
            entity_type="host",
            entity_id=host,
            type="host.unreachable",
            data={"from": "ready", "to": "unreachable", "reason": "no heartbeat for 50 s"},
        )
        await events.append(conn, org_id=t.org.id, entity_type="job", entity_id=uuid.uuid4(), type="job.submitted")
    assert await notifier.run_once() == 1
    text = out.getvalue()
    assert f"host.unreachable host {host}" in text and "no heartbeat for 50 s" in text and "job.submitted" not in text
