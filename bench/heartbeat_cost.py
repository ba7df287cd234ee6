"""Benchmark: what one heartbeat costs below HTTP, the service and PostgreSQL alone.

Starts `gpufleet up` (embedded PostgreSQL in a temporary data dir), registers --hosts simulated
hosts of 8 GPUs through /v1/agent/register, then, in this process, parses each heartbeat body as
the route does (``HeartbeatRequest``) and calls ``services.heartbeats.heartbeat`` back to back,
one at a time, round-robin over the hosts. CPU time per heartbeat: this process (parse,
validation, planning, asyncpg) and the PostgreSQL processes of the run (every backend, with
psutil), and the statements per heartbeat (``xact_commit`` and the server's statement count are
not exposed to the runtime role, so the asyncpg statements are counted in the client). Runs of
the old and new code side by side: point PYTHONPATH at the other source tree. Prints one JSON object.

    python bench/heartbeat_cost.py [--hosts 50] [--heartbeats 3000] [--samples-per-gpu 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from _up import start_server
from ingest import Fleet, per_pid, postgres_procs, register_all


class Counting:
    """Counts the statements a connection sends (asyncpg's execute/fetch family)."""

    def __init__(self) -> None:
        self.n = 0

    def install(self) -> None:
        import asyncpg.connection

        cls = asyncpg.connection.Connection
        counter = self
        for name in ("execute", "fetch", "fetchrow", "fetchval"):
            orig = getattr(cls, name)

            def wrap(orig: Any) -> Any:
                async def counted(self: Any, *args: Any, **kw: Any) -> Any:
                    counter.n += 1
                    return await orig(self, *args, **kw)

                return counted

            setattr(cls, name, wrap(orig))


async def drive(args: argparse.Namespace, env_base: Path, credentials: list[str], server_pid: int) -> dict[str, Any]:
    import os

    from gpufleet.cli.common import load_settings
    from gpufleet.db.setup import open_database
    from gpufleet.domain.hosts import HeartbeatPolicy
    from gpufleet.schemas.agent import HeartbeatRequest
    from gpufleet.services import heartbeats
    from gpufleet.services.hosts import authenticate_host

    os.environ["GPUFLEET_DATA_DIR"] = str(env_base / "data")
    os.environ["GPUFLEET_CONFIG_DIR"] = str(env_base / "cfg")
    settings = load_settings()
    handle = await open_database(settings, migrate_now=False)
    db = handle.db
    policy = HeartbeatPolicy.from_settings(settings)
    identities = [await authenticate_host(db, c) for c in credentials]
    fleet = Fleet(credentials, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6))
    hosts = len(credentials)
    per_round = args.heartbeats // args.rounds
    ticks = args.rounds * (per_round // hosts + 1) + 1
    bodies = [[fleet.request(h, t, 0).split(b"\r\n\r\n", 1)[1] for h in range(hosts)] for t in range(ticks)]
    counter = Counting()
    counter.install()

    async def beat(host: int, tick: int) -> None:
        body = HeartbeatRequest.model_validate_json(bodies[tick][host])
        report = body.to_domain()
        if isinstance(report, tuple):  # the older route's (report, where)
            report = report[0]
        await heartbeats.heartbeat(db, identities[host], report, policy=policy)

    for h in range(hosts):  # first beat: inventory written, foreign usage flagged
        await beat(h, 0)
    server = psutil.Process(server_pid)
    rounds = []
    tick = 1
    for _ in range(args.rounds):
        procs = postgres_procs(server, env_base / "data")
        pg0, cpu0, n0 = per_pid(procs), time.process_time(), counter.n
        t0 = time.perf_counter()
        for j in range(per_round):
            k, host = divmod(j, hosts)
            await beat(host, tick + k)  # each pass over the hosts: the next 10 s of samples
        tick += per_round // hosts + 1
        wall = time.perf_counter() - t0
        pg1 = per_pid(procs)
        rounds.append(
            {
                "heartbeats_per_s": round(per_round / wall, 1),
                "client_cpu_ms": round(1000 * (time.process_time() - cpu0) / per_round, 3),
                "postgres_cpu_ms": round(1000 * sum(v - pg0.get(p, 0.0) for p, v in pg1.items()) / per_round, 3),
                "statements": round((counter.n - n0) / per_round, 2),
            }
        )
    await handle.close()
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} | {"rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--heartbeats", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples-per-gpu", type=int, default=10)
    args = ap.parse_args()
    import ingest

    ingest.SAMPLES = args.samples_per_gpu
    up = start_server(["up", "--no-local-agent"])
    try:
        credentials = asyncio.run(register_all(up.url, up.headers, args.hosts))
        result = asyncio.run(drive(args, up.base, credentials, up.proc.pid))
    finally:
        up.stop()
    import gpufleet

    print(
        json.dumps(
            {
                "benchmark": "heartbeat_cost",
                "code": str(Path(gpufleet.__file__).parent),
                "machine": machine(),
                "hosts": args.hosts,
                "samples_per_heartbeat": 8 * args.samples_per_gpu,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
