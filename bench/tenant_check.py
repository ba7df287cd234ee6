"""Benchmark: what a tenant transaction and a statement under row-level security cost in the database.

Isolates the database side of tenant isolation from HTTP: on the embedded PostgreSQL (fsync off),
one connection of the runtime role, (a) `Database.transaction(org)` opened and committed with one
primary-key read inside, back to back, and (b) one transaction running primary-key reads of one
tenant row (each statement evaluates the tenant policy's InitPlan once), from the client and in a
loop inside the server (the best of 7, the figure least disturbed by a busy machine). Run it on two checkouts
to compare a change of the policies. Prints one JSON object.

    python bench/tenant_check.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database


async def measure(db: Database, seconds: float) -> dict[str, float]:
    async with db.system_transaction() as conn:
        org = await conn.fetchval("insert into organizations (name, slug) values ('Bench', 'bench') returning id")
    read = "select id, name from organizations where id = $1"
    out: dict[str, float] = {}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        async with db.transaction(org) as conn:
            assert await conn.fetchval(read, org) == org
        n += 1
    out["transactions_per_s"] = round(n / (time.perf_counter() - t0))
    async with db.transaction(org) as conn:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            assert await conn.fetchval(read, org) == org
            n += 1
        out["statements_per_s"] = round(n / (time.perf_counter() - t0))
        # Inside the server, no client in the loop: the best of 7 runs of 2,000 reads each.
        loop = f"""do $$
            declare t0 timestamptz := clock_timestamp();
            begin
                for i in 1..2000 loop perform 1 from organizations where id = '{org}'; end loop;
                perform set_config('bench.us', (extract(epoch from clock_timestamp() - t0) * 1e6 / 2000)::text, true);
            end $$"""
        best = float("inf")
        for _ in range(7):
            await conn.execute(loop)
            best = min(best, float(await conn.fetchval("select current_setting('bench.us')")))
        out["server_us_per_statement"] = round(best, 2)
    return out


def start_server() -> EmbeddedPostgres:
    base = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    base.chmod(0o755)  # as root the unprivileged postgres user must traverse it
    server = EmbeddedPostgres(base / "postgres", extra_options={"fsync": "off", "synchronous_commit": "off"})
    server.start()
    return server


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    server = start_server()
    try:
        conn = await asyncpg.connect(server.dsn(database="postgres"))
        try:
            await conn.execute("create database bench")
        finally:
            await conn.close()
        conn = await asyncpg.connect(server.dsn(database="bench"))
        try:
            await migrate.upgrade(conn)
        finally:
            await conn.close()
        db = Database(server.dsn(database="bench"), server.dsn(database="bench", user=RUNTIME_ROLE), min_size=1)
        await db.open()
        try:
            result = await measure(db, args.seconds)
        finally:
            await db.close()
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "benchmark": "tenant_check",
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
                "migrations": [m.version for m in migrate.available()],
                **result,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
