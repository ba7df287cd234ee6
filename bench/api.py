"""Benchmark: authenticated GET of one object and authenticated create, 64 connections, loopback.

Starts `gpufleet server` in a subprocess (embedded PostgreSQL in a temporary data dir, unless
GPUFLEET_DATABASE_URL is set), takes the first-run owner key, and drives it with a keep-alive
load generator. Prints one JSON object.

    python bench/api.py [--seconds 10] [--connections 64] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import run
from _up import start_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    # Rate limiting stays on, with limits never reached.
    up = start_server(["server", "--workers", str(args.workers)], keep_database_url=True)
    url, headers, proc = up.url, up.headers, up.proc
    try:
        me = httpx.get(f"{url}/v1/me", headers=headers).json()
        org = me["organization_id"]
        server = psutil.Process(proc.pid)

        def server_cpu() -> float:
            procs = [server, *server.children(recursive=True)]
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total

        def measure(method: str, path: str, body: object | None) -> dict[str, object]:
            cpu0 = server_cpu()
            t0 = time.perf_counter()
            res = asyncio.run(
                run(
                    url,
                    method=method,
                    path=path,
                    headers=headers,
                    body=body,
                    connections=args.connections,
                    duration_s=args.seconds,
                )
            )
            wall = time.perf_counter() - t0
            cpu1 = server_cpu()
            out = res.summary()
            # The server's processes, not the database's (embedded PostgreSQL runs as its own tree).
            out["server_cpu_cores"] = round((cpu1 - cpu0) / wall, 2)
            return out

        get = measure("GET", f"/v1/organizations/{org}", None)
        create = measure("POST", "/v1/api-keys", {"name": "bench"})
        result = {
            "benchmark": "api",
            "date": datetime.now(UTC).date().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}",
            "database": "external" if os.environ.get("GPUFLEET_DATABASE_URL") else "embedded PostgreSQL 18",
            "connections": args.connections,
            "seconds": args.seconds,
            "server_workers": args.workers,
            "get_one_object": get,
            "create": create,
            "targets": {"get_req_per_s": 1500, "create_req_per_s": 800, "p99_ms": 50},
        }
        print(json.dumps(result))
    finally:
        up.stop()


if __name__ == "__main__":
    main()
