"""The hard case for the scheduler: a fleet held at 85-95% allocation with churn. Prints one JSON object.

    python bench/scheduler_churn.py [--hosts 1000] [--orgs 4] [--rounds 10] [--low 0.87] [--arrivals 1.5] [--seed 1]

``bench/scheduler_throughput.py`` places jobs into an idle fleet in one cycle: the best case.
Here the same fleet (``--hosts`` x 8 GPUs of four models over ``--orgs`` organizations, each
with a quota on one model) is first filled to about 90% with mixed jobs, with a backlog left
pending, some of which cannot fit now or ever (a model no host has, 8 GPUs of one model on a
nearly full fleet, over quota) and so get pending reasons. Then, per round:

1. churn (not timed): the jobs placed start, then running jobs finish until the allocation is
   down to ``--low`` (87%; the status UPDATEs the agent's reports make, the ledger trigger
   releases them), and ``--arrivals`` (1.5) new jobs per finished one arrive (set-based INSERT);
2. timed: ``Scheduler.run_once`` while a writer submits jobs, cancels pending ones and finishes
   running ones through the same service functions the API and agent reports call
   (``jobs.submit``, ``jobs.cancel``, ``transition_job``), concurrently, on their own connections.

Reported: placements/s (placements committed / summed wall time of the measured cycles),
decision p50/p99 (of these cycles only: compare them only with runs in the same state), cycle
time p50/max, conflicts, pending reasons written, allocation before and after each cycle, and a
ledger audit at the end. The embedded database is durable unless ``--non-durable`` (labelled).
Exits non-zero if the ledger is not exact, if the fill left 85-95%, or if a concurrent write
failed for a reason other than a lost race.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.jobs import GpuRequirement, JobSpec, JobStatus
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidTransition
from gpufleet.repo import jobs as jobs_repo
from gpufleet.scheduler.service import Scheduler
from gpufleet.services import jobs as jobs_service
from gpufleet.services.transitions import transition_job
from scheduler_throughput import AUDIT_SQL, LOAD_SQL, NON_DURABLE, _with_db, durability

# Jobs that cannot be placed now or ever, so that every cycle has reasons to write.
UNFIT_SQL = """
insert into jobs (organization_id, name, command, gpu_count, gpu_milli, gpu_models, cpu_milli, ram_mb)
select o.id, 'unfit-' || n, '{true}',
       case when n % 2 = 0 then 1 else 8 end, 1000,
       case when n % 2 = 0 then array['B200'] else array['H100'] end, 2000, 16384
  from organizations o, generate_series(1, $1) n
"""

FILL_SQL = """
select sum(allocated_milli)::float8 / (count(*) * 1000) from gpu_resources where status <> 'unhealthy'
"""

# What the agent's start and exit reports do to a job, set-based: the ledger trigger releases it.
PICK_SQL = """
select id from jobs where status in ('allocated', 'running') and gpu_count > 0 order by random() limit $1
"""
FINISH_SQL = """
update jobs set status = 'succeeded', finished_at = now(), exit_code = 0 where id = any($1) and status = 'running'
"""
ARRIVE_SQL = """
insert into jobs (organization_id, name, command, priority, gpu_count, gpu_milli, gpu_models, cpu_milli, ram_mb)
select o.id, 'arrival', '{true}', (random() * 10)::int - 5, s.c,
       case when s.c = 1 and s.f < 0.3 then 500 else 1000 end, '{}', 2000, 16384
  from organizations o, generate_series(1, $1) g,
       lateral (select (array[1, 1, 1, 2, 4, 8])[1 + floor(random() * 6)::int] c, random() f where g > 0) s
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def _fill(db: Database) -> float:
    async with db.system_transaction() as c:
        return float(await c.fetchval(FILL_SQL) or 0)


async def _churn(conn: asyncpg.Connection, args: argparse.Namespace) -> int:  # type: ignore[type-arg]
    """Agents start what was placed; jobs finish until the fill is down to ``--low``; new jobs arrive."""
    async with conn.transaction():
        await conn.execute("set local role gpufleet_system")
        await conn.execute("update jobs set status = 'running', started_at = now() where status = 'allocated'")
        fill = float(await conn.fetchval(FILL_SQL) or 0)
        per_job = float(
            await conn.fetchval(
                """select sum(gpu_count * gpu_milli)::float8 / 1000 / count(*) from jobs
                    where status = 'running' and gpu_count > 0"""
            )
            or 1.0
        )
        gpus = int(await conn.fetchval("select count(*) from gpu_resources where status <> 'unhealthy'"))
        n = max(1, round((fill - args.low) * gpus / per_job))
        ids = [r[0] for r in await conn.fetch(PICK_SQL, n)]
        await conn.execute(FINISH_SQL, ids)
        await conn.execute(ARRIVE_SQL, max(1, int(len(ids) * args.arrivals) // args.orgs))
    return len(ids)


class Writer:
    """Concurrent writes through the service layer the API and the agent reports use."""

    def __init__(self, db: Database, orgs: list[uuid.UUID], seed: int) -> None:
        self.db, self.orgs, self.rng = db, orgs, random.Random(seed)
        self.counts = {"submitted": 0, "cancelled": 0, "finished": 0, "lost_races": 0, "errors": 0}
        self.error_samples: list[str] = []

    async def one(self) -> None:
        org = self.rng.choice(self.orgs)
        kind = self.rng.random()
        try:
            if kind < 0.5:
                unfit = self.rng.random() < 0.1
                spec = JobSpec(
                    name="api",
                    command=["true"],
                    gpu=GpuRequirement(count=self.rng.choice([1, 1, 2, 4]), models=("B200",) if unfit else ()),
                )
                await jobs_service.submit(self.db, TenantContext.system(org), spec)
                self.counts["submitted"] += 1
                return
            status = JobStatus.PENDING if kind < 0.7 else JobStatus.RUNNING
            async with self.db.transaction(org) as conn:
                found = await jobs_repo.get_gpu_jobs(conn, org_id=org, status=status, limit=50)
            if not found:
                return
            job = self.rng.choice(found)
            if status is JobStatus.PENDING:
                await jobs_service.cancel(self.db, TenantContext.system(org, "bench"), job.id)
                self.counts["cancelled"] += 1
            else:  # the agent's exit report
                async with self.db.transaction(org) as conn:
                    current = await jobs_repo.get_for_update(conn, org_id=org, job_id=job.id)
                    if current is None or current.status is not JobStatus.RUNNING:
                        raise InvalidTransition("moved meanwhile")
                    await transition_job(conn, current, JobStatus.SUCCEEDED, exit_code=0)
                self.counts["finished"] += 1
        except InvalidTransition:
            self.counts["lost_races"] += 1  # the scheduler or the churn got there first: expected
        except Exception as exc:
            self.counts["errors"] += 1
            self.error_samples = [*self.error_samples[:4], repr(exc)[:200]]

    async def run(self, stop: asyncio.Event, concurrency: int) -> None:
        async def loop() -> None:
            while not stop.is_set():
                await self.one()

        await asyncio.gather(*(loop() for _ in range(concurrency)))


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
    gpus = args.hosts * 8
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
            async with conn.transaction():
                await conn.execute(LOAD_SQL)
                await conn.execute("set local role gpufleet_system")
                # ~1.9 GPUs per job: 5 jobs per host fill past 95% of what fits, the rest waits.
                await conn.execute(
                    "select pg_temp.gpufleet_bench_load($1, $2, $3, $4)",
                    args.orgs,
                    args.hosts,
                    args.seed / 1000,
                    args.hosts * 5,
                )
                await conn.execute(UNFIT_SQL, max(1, args.hosts // 20))
                # Each organization may use at most 60% of the H100s it holds: quota reasons.
                await conn.execute(
                    """insert into quotas (organization_id, gpu_model, max_gpus)
                       select h.organization_id, 'H100-80GB', (count(*) * 0.6)::int
                         from gpu_resources g join hosts h on h.id = g.host_id
                        where g.model = 'H100-80GB' group by 1"""
                )
            await conn.execute("vacuum analyze")
            orgs = [r[0] for r in await conn.fetch("select id from organizations order by id")]
        finally:
            await conn.close()

        db = Database(owner_dsn, runtime, min_size=1, max_size=4 + args.writers)
        await db.open()
        churn_conn = await asyncpg.connect(owner_dsn)
        try:
            scheduler = Scheduler(db, Settings(scheduler_policy=args.policy))
            while (await scheduler.run_once()).placed:  # fill the fleet (not measured)
                pass
            filled = await _fill(db)
            await churn_conn.execute("vacuum analyze")
            scheduler.stats.recent_decision_ns.clear()
            writer = Writer(db, orgs, args.seed)
            rounds: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                freed = await _churn(churn_conn, args)
                before = await _fill(db)
                stop = asyncio.Event()
                writes = asyncio.create_task(writer.run(stop, args.writers))
                await asyncio.sleep(0)  # the writers are in flight when the cycle starts
                result = await scheduler.run_once()
                stop.set()
                await writes
                rounds.append(
                    {
                        "finished_by_churn": freed,
                        "fill_before": round(before, 4),
                        "fill_after": round(await _fill(db), 4),
                        "placed": result.placed,
                        "cycle_s": round(result.duration_s, 4),
                        "snapshot_s": round(result.snapshot_s, 4),
                        "decide_s": round(result.decide_s, 4),
                        "commit_s": round(result.commit_s, 4),
                        "conflicts": result.conflicts,
                        "passes": result.passes,
                        "reasons_written": result.reasons_written,
                        "allocation_failed": result.allocation_failed,
                        "still_pending": result.still_pending,
                    }
                )
            async with db.system_transaction() as c:
                audit = {k: int(await c.fetchval(sql)) for k, sql in AUDIT_SQL.items()}
                reasons = {
                    r["reason"]: r["n"]
                    for r in await c.fetch(
                        """select split_part(pending_reason, ':', 1) reason, count(*) n from jobs
                            where status = 'pending' and pending_reason is not null group by 1 order by 2 desc
                            limit 8"""
                    )
                }
        finally:
            await churn_conn.close()
            await db.close()
        placed = sum(r["placed"] for r in rounds)
        cycle_s = [r["cycle_s"] for r in rounds]
        fills = [r["fill_before"] for r in rounds] + [r["fill_after"] for r in rounds]
        return {
            "benchmark": "scheduler_churn",
            "server": server,
            "postgres": version,
            "durability": await durability(owner_dsn),
            "fleet": "held at 85-95% allocated with churn (hard case)",
            "hosts": args.hosts,
            "gpus": gpus,
            "orgs": args.orgs,
            "policy": args.policy,
            "writers": args.writers,
            "fill_after_warmup": round(filled, 4),
            "rounds": len(rounds),
            "placed": placed,
            "placements_per_s": round(placed / sum(cycle_s), 1) if sum(cycle_s) else 0.0,
            "cycle_s": {"p50": round(statistics.median(cycle_s), 4), "max": round(max(cycle_s), 4)},
            "decision_latency_us": {
                "p50": round(scheduler.stats.decision_quantile(0.5) * 1e6, 1),
                "p99": round(scheduler.stats.decision_quantile(0.99) * 1e6, 1),
                "decisions": len(scheduler.stats.recent_decision_ns),
            },
            "conflicts": sum(r["conflicts"] for r in rounds),
            "reasons_written": sum(r["reasons_written"] for r in rounds),
            "allocation_failed": sum(r["allocation_failed"] for r in rounds),
            "fill_range": [round(min(fills), 4), round(max(fills), 4)],
            "pending_reasons_at_end": reasons,
            "concurrent_writes": writer.counts,
            "write_errors": writer.error_samples,
            "per_round": rounds,
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
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--low", type=float, default=0.87, help="jobs finish until the fill is down to this")
    parser.add_argument("--arrivals", type=float, default=1.5, help="jobs arriving per job finished")
    parser.add_argument("--writers", type=int, default=4, help="concurrent service-layer writers")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--non-durable", action="store_true", help="embedded only: fsync etc. off (label it)")
    out = asyncio.run(run(parser.parse_args()))
    print(json.dumps(out))
    lo, hi = out["fill_range"]
    ok = out["ledger_exact"] and lo >= 0.85 and hi <= 0.95 and not out["concurrent_writes"]["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
