"""Benchmark: webhook deliveries to a local receiver (a separate process), through the real worker.

An embedded PostgreSQL, one organization with one webhook (`job.*`) to the receiver, and the
delivery worker's loop (`background.webhook_delivery.run`, as a server replica runs it, wake-ups by
LISTEN included) with default settings. Measured:

* latency: events committed one at a time (every 20 ms); from the event's `created_at` (database
  clock) to the request arriving at the receiver (same machine, same clock): p50 / p99;
* throughput: N events committed in one statement; from the commit to the last delivery received;
* backlog drain: the receiver answers 503 while N events are created; then it is back and the
  retries are made due (instead of waiting the schedule's 5 s); time until every one succeeded.

    python bench/webhooks.py [--events 10000] [--latency-events 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from gpufleet.background import webhook_delivery
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from gpufleet.repo import events, orgs
from gpufleet.repo import webhooks as hooks
from gpufleet.webhooks.signing import SecretBox, new_secret

HERE = Path(__file__).resolve().parent


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1)


def lines(log: Path) -> list[list[str]]:
    return [ln.split(" ") for ln in log.read_text().splitlines() if ln.strip()]


async def wait_count(log: Path, n: int, timeout_s: float = 600) -> float:
    """Seconds until the receiver logged ``n`` requests; the time of the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = lines(log)
        if len(rows) >= n:
            return max(float(r[0]) for r in rows)
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(rows)} of {n} deliveries arrived")
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    base.chmod(0o755)  # noqa: ASYNC240 - setup, not the measured path
    embedded = EmbeddedPostgres(base / "postgres")
    embedded.start()
    log = base / "receiver.log"
    log.touch()
    down = Path(str(log) + ".down")
    port = 18000 + os.getpid() % 2000
    receiver = subprocess.Popen([sys.executable, str(HERE / "_webhook_receiver.py"), str(port), str(log)])  # noqa: ASYNC220
    name = f"gpufleet_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(embedded.dsn(database="postgres"))
    await admin.execute(f'create database "{name}"')
    conn = await asyncpg.connect(embedded.dsn(database=name))
    await migrate.upgrade(conn)
    version = await conn.fetchval("show server_version")
    await conn.close()
    db = Database(embedded.dsn(database=name), embedded.dsn(user=RUNTIME_ROLE, database=name), min_size=1, max_size=8)
    await db.open()
    settings = Settings(webhook_allow_networks="127.0.0.0/8", log_level="warning")
    stop = asyncio.Event()
    worker = asyncio.create_task(webhook_delivery.run(db, settings, stop))
    out: dict[str, Any] = {}
    try:
        org_id = uuid.uuid4()
        async with db.system_transaction() as c:
            await orgs.create(c, org_id=org_id, name="Bench", slug=f"bench-{org_id.hex[:8]}")
            user = await orgs.create_user(c, email=f"{org_id.hex[:8]}@example.com", name="b")
            await orgs.add_member(c, org_id=org_id, user_id=user.id, role=Role.OWNER)
            await hooks.create(
                c,
                org_id=org_id,
                url=f"http://127.0.0.1:{port}/hook",
                description="bench",
                event_types=["job.*"],
                secret_ciphertext=SecretBox(settings.secret_key.get_secret_value()).seal(new_secret()),
                enabled=True,
                created_by=None,
            )
        await asyncio.sleep(1.0)  # the receiver and the worker's LISTEN are up

        # -- latency: one event per transaction, every 20 ms
        for _ in range(args.latency_events):
            async with db.transaction(org_id) as c:
                await events.append(c, org_id=org_id, entity_type="job", entity_id=uuid.uuid4(), type="job.submitted")
            await asyncio.sleep(0.02)
        await wait_count(log, args.latency_events)
        lat = [float(r[0]) - datetime.fromisoformat(r[2].replace("Z", "+00:00")).timestamp() for r in lines(log)]
        out["latency"] = {"n": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": pct(lat, 100)}

        # -- throughput: N events in one commit
        rows = [(org_id, "job", uuid.uuid4(), "job.submitted", {"i": i}) for i in range(args.events)]
        before = len(lines(log))
        t0 = time.time()
        async with db.system_transaction() as c:
            await events.append_many(c, rows)
        committed = time.time()
        last = await wait_count(log, before + args.events)
        out["throughput"] = {
            "n": args.events,
            "commit_s": round(committed - t0, 2),
            "deliveries_per_s": round(args.events / (last - committed), 1),
            "drain_s": round(last - committed, 2),
        }

        # -- backlog drain after an outage
        down.touch()  # noqa: ASYNC240 - setup, not the measured path
        before = len(lines(log))
        rows = [(org_id, "job", uuid.uuid4(), "job.submitted", {"i": i}) for i in range(args.events)]
        async with db.system_transaction() as c:
            await events.append_many(c, rows)
        await asyncio.sleep(3.0)  # the outage: first attempts fail (503)
        async with db.system_transaction() as c:
            failed_attempts = await c.fetchval("select count(*) from webhook_attempts where not succeeded")
        down.unlink()  # noqa: ASYNC240 - setup, not the measured path
        t0 = time.time()
        async with db.system_transaction() as c:  # the schedule's retries come due now
            await c.execute(
                "update webhook_deliveries set next_attempt_at = now() where status in ('pending', 'failed')"
            )
            await c.execute("select pg_notify('gpufleet_webhooks', '')")
        last = await wait_count(log, before + args.events)
        out["backlog"] = {
            "n": args.events,
            "failed_attempts_during_outage": failed_attempts,
            "drain_s": round(last - t0, 2),
            "deliveries_per_s": round(args.events / (last - t0), 1),
        }
        async with db.system_transaction() as c:
            out["statuses"] = {
                r["status"]: r["n"]
                for r in await c.fetch("select status, count(*) as n from webhook_deliveries group by status")
            }
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await db.close()
        receiver.send_signal(signal.SIGINT)
        receiver.wait(10)
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
        embedded.stop()
        shutil.rmtree(base, ignore_errors=True)
    out["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": version,
        "load": round(os.getloadavg()[0], 2),
        "date": datetime.now().strftime("%Y-%m-%d"),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--latency-events", type=int, default=300)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
