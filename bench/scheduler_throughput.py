"""Placements committed per second by the real scheduler path; prints one JSON object.

    python bench/scheduler_throughput.py [--hosts 5000] [--jobs 10000] [--orgs 4] [--seed 1] [--budget]

A fresh database (on GPUFLEET_TEST_DATABASE_URL's server, or an embedded one) is bulk-loaded with
set-based SQL: ``--hosts`` hosts x 8 GPUs (four models) spread over ``--orgs`` organizations and
``--jobs`` pending jobs of mixed shapes (fractions, 1/2/4/8 GPUs, CPU-only, model constraints,
priorities). Then ``Scheduler.run_once`` runs until it places nothing more; the figure is
committed placements / wall time of those cycles (snapshot + decisions + commits + reasons).
Afterwards SQL checks the ledger: no over-allocation, no leaked allocation.

This is the best case (an idle fleet, one big cycle, no churn); ``bench/scheduler_churn.py`` is
the hard case. The embedded database runs as users get it (fsync, synchronous_commit and
full_page_writes on); ``--non-durable`` turns them off, and the result says so ("durability").
``--budget`` gives
every organization prices and a hard monthly budget too large to refuse anything, and every job an
estimate, so each decision and each batch commit pays for the budget check (docs/costs.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.scheduler.service import Scheduler

LOAD_SQL = """
create function pg_temp.gpufleet_bench_load(orgs int, nhosts int, seed float8, njobs int) returns void
language plpgsql as $$
begin
insert into organizations (id, name, slug)
select ('00000000-0000-4000-8000-' || lpad(o::text, 12, '0'))::uuid, 'Org ' || o, 'org-' || o
  from generate_series(1, orgs) o;

insert into hosts (organization_id, name, cpu_cores, ram_mb, simulated, last_heartbeat_at)
select ('00000000-0000-4000-8000-' || lpad((1 + h % orgs)::text, 12, '0'))::uuid,
       'host-' || lpad(h::text, 5, '0'), 128, 1048576, true, now()
  from generate_series(0, nhosts - 1) h;

insert into gpu_resources (organization_id, host_id, uuid, index, model, memory_mb, simulated, last_seen_at)
select h.organization_id, h.id, 'GPU-' || gen_random_uuid(), i,
       (array['A100-80GB', 'H100-80GB', 'L4', 'T4'])[1 + hn % 4],
       (array[81920, 81920, 23034, 15360])[1 + hn % 4], true, now()
  from (select id, organization_id, substr(name, 6)::int / orgs as hn from hosts) h, generate_series(0, 7) i;

perform setseed(seed);
with shapes as (
    select n, random() as k, random() as m, random() as p from generate_series(1, njobs) n
)
insert into jobs (organization_id, name, command, priority, gpu_count, gpu_milli, gpu_models,
                  cpu_milli, ram_mb, queued_at)
select ('00000000-0000-4000-8000-' || lpad((1 + n % orgs)::text, 12, '0'))::uuid,
       'job-' || n, '{true}', (p * 10)::int - 5,
       case when k < 0.25 then 1 when k < 0.60 then 1 when k < 0.75 then 2
            when k < 0.88 then 4 when k < 0.96 then 8 else 0 end,
       case when k < 0.25 then (array[100, 250, 500, 700])[1 + (m * 4)::int % 4]
            when k < 0.96 then 1000 else 0 end,
       case when k < 0.96 and m < 0.15 then array['H100'] when k < 0.96 and m < 0.25 then array['A100-80GB']
            else '{}' end,
       case when k < 0.96 then 2000 else 8000 end,
       case when k < 0.96 then 16384 else 4096 end,
       now() - make_interval(secs => (njobs - n) / 1000.0)
  from shapes;
end $$;
"""

# Faster, and loses committed work on a crash: never what a user runs, so only on request.
NON_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
BUDGET_SQL = """
insert into gpu_prices (organization_id, kind, gpu_model, hourly_price, effective_from)
select o.id, 'gpu', m.model, m.price, now() - interval '1 day'
  from organizations o, (values ('A100-80GB', 1.89), ('H100-80GB', 2.49), ('L4', 0.45), ('T4', 0.35)) m(model, price);
update jobs set cost_estimate = gpu_count * gpu_milli / 1000.0 * 2.49;
insert into budgets (organization_id, period, amount_limit, action) select id, 'month', 1000000000, 'block'
  from organizations;
"""

AUDIT_SQL = {
    "gpus_over_or_mismatched": """
        select count(*) from gpu_resources g
         where g.allocated_milli > 1000 or g.allocated_memory_mb > g.memory_mb
            or g.allocated_milli <> (select coalesce(sum(a.milli), 0) from allocations a
                                      where a.gpu_id = g.id and a.released_at is null)""",
    "hosts_mismatched": """
        select count(*) from hosts h
         where h.cpu_milli_allocated <> (select coalesce(sum(j.cpu_milli), 0) from jobs j
                                          where j.host_id = h.id and j.status in ('allocated', 'running'))""",
    "leaked_allocations": """
        select count(*) from allocations a join jobs j on j.id = a.job_id
         where a.released_at is null and j.status not in ('allocated', 'running')""",
}


async def durability(dsn: str) -> dict[str, str]:
    """The server's own word on its durability settings, so a result cannot misstate them."""
    conn = await asyncpg.connect(dsn)
    try:
        return {k: str(await conn.fetchval(f"show {k}")) for k in ("fsync", "synchronous_commit", "full_page_writes")}
    finally:
        await conn.close()


def _with_db(dsn: str, name: str, user: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, parts.fragment))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("GPUFLEET_TEST_DATABASE_URL")
    embedded: EmbeddedPostgres | None = None
    base_dir: Path | None = None
    if url:
        admin_dsn, server = url, "external"
    else:
        base_dir = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
        base_dir.chmod(0o755)
        embedded = EmbeddedPostgres(base_dir / "postgres", extra_options=NON_DURABLE if args.non_durable else None)
        embedded.start()
        admin_dsn, server = embedded.dsn(database="postgres"), "embedded"
    name = f"gpufleet_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'create database "{name}"')
        owner_dsn = embedded.dsn(database=name) if embedded else _with_db(admin_dsn, name)
        runtime = (
            embedded.dsn(user=RUNTIME_ROLE, database=name) if embedded else _with_db(admin_dsn, name, RUNTIME_ROLE)
        )
        conn = await asyncpg.connect(owner_dsn)
        try:
            await migrate.upgrade(conn)
            version = await conn.fetchval("show server_version")
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(LOAD_SQL)
                await conn.execute("set local role gpufleet_system")
                await conn.execute(
                    "select pg_temp.gpufleet_bench_load($1, $2, $3, $4)",
                    args.orgs,
                    args.hosts,
                    args.seed / 1000,
                    args.jobs,
                )
                if args.budget:
                    await conn.execute(BUDGET_SQL)
            await conn.execute("vacuum analyze")
            load_s = time.perf_counter() - t0
        finally:
            await conn.close()

        db = Database(owner_dsn, runtime, min_size=1, max_size=4)
        await db.open()
        try:
            settings = Settings(scheduler_batch_size=args.batch, scheduler_policy=args.policy)
            scheduler = Scheduler(db, settings)
            cycles = []
            start = time.perf_counter()
            while True:
                result = await scheduler.run_once()
                cycles.append(result)
                if result.placed == 0:
                    break
            wall = time.perf_counter() - start
            placing = sum(c.duration_s for c in cycles if c.placed)
            async with db.system_transaction() as c:
                audit = {k: int(await c.fetchval(sql)) for k, sql in AUDIT_SQL.items()}
                counts = {r["status"]: r["n"] for r in await c.fetch("select status, count(*) n from jobs group by 1")}
                gpu_alloc = await c.fetchval(
                    "select sum(allocated_milli)::float8 / (count(*) * 1000) from gpu_resources"
                )
        finally:
            await db.close()
        placed = sum(c.placed for c in cycles)
        first = cycles[0]
        return {
            "benchmark": "scheduler_throughput",
            "server": server,
            "postgres": version,
            "durability": await durability(owner_dsn),
            "fleet": "idle at the start, one cycle places what fits (best case)",
            "hosts": args.hosts,
            "gpus": args.hosts * 8,
            "orgs": args.orgs,
            "jobs": args.jobs,
            "policy": args.policy,
            "hard_budgets": args.budget,
            "batch_size": args.batch,
            "load_s": round(load_s, 2),
            "placed": placed,
            "placements_per_s": round(placed / placing, 1) if placing else 0.0,
            "placing_wall_s": round(placing, 3),
            "all_cycles_wall_s": round(wall, 3),
            "cycles": len(cycles),
            "first_cycle": {
                "placed": first.placed,
                "snapshot_s": round(first.snapshot_s, 3),
                "decide_s": round(first.decide_s, 3),
                "commit_s": round(first.commit_s, 3),
                "total_s": round(first.duration_s, 3),
            },
            "decision_latency_us": {
                "p50": round(scheduler.stats.decision_quantile(0.5) * 1e6, 1),
                "p99": round(scheduler.stats.decision_quantile(0.99) * 1e6, 1),
                "decisions": scheduler.stats.decisions,
            },
            "conflicts": scheduler.stats.conflicts,
            "job_status": counts,
            "gpu_allocated_fraction": round(float(gpu_alloc or 0), 4),
            "audit": audit,
            "ledger_exact": not any(audit.values()),
            "machine": machine(),
        }
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
        if embedded is not None:
            embedded.stop()
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--policy", default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--non-durable", action="store_true", help="embedded only: fsync etc. off (label it)")
    parser.add_argument("--budget", action="store_true", help="Hard budgets, prices and estimates everywhere.")
    out = asyncio.run(run(parser.parse_args()))
    print(json.dumps(out))
    return 0 if out["ledger_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
