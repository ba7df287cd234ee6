"""Benchmark: authenticated GET of one object and authenticated create, 64 connections, loopback.

Starts `gpufleet server` in a subprocess (embedded PostgreSQL in a temporary data dir, unless
GPUFLEET_DATABASE_URL is set), takes the first-run owner key, and drives it with a keep-alive
load generator. Prints one JSON object.

    python bench/api.py [--seconds 10] [--connections 64] [--workers 1] [--logging default|off]
                        [--loadgen python|wrk]

``--loadgen wrk`` drives the server with Debian's compiled `wrk` (``apt-get install wrk``; two
threads, the Lua script bench/_wrk.lua sets the Authorization header and body) instead of the
Python generator, which competes with the server for the same cores: its latency percentiles
cover every response (none may fail), and req/s counts the 2xx ones.

``--logging default`` (the default) runs the server as a user does: log level INFO, so one
access-log line per request (to a file, as a service manager would take it). ``--logging off``
sets GPUFLEET_LOG_LEVEL=warning, which drops the access log: report it as such. The rates count
successful responses only; the benchmark exits non-zero when more than 0.1% of requests fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE, run
from _machine import machine
from _up import start_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--logging", choices=["default", "off"], default="default")
    ap.add_argument("--loadgen", choices=["python", "wrk"], default="python")
    args = ap.parse_args()
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")

    # Rate limiting stays on, with limits never reached.
    up = start_server(
        ["server", "--workers", str(args.workers)],
        keep_database_url=True,
        log_level=None if args.logging == "default" else "warning",
    )
    failed = False
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
            if args.loadgen == "wrk":
                return measure_wrk(method, path, body)
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
            nonlocal failed
            failed = failed or res.failed
            out = res.summary()
            # The server's processes, not the database's (embedded PostgreSQL runs as its own tree).
            out["server_cpu_cores"] = round((cpu1 - cpu0) / wall, 2)
            return out

        def wrk(method: str, path: str, body: object | None, seconds: float) -> dict[str, int]:
            env = {
                **os.environ,
                "BENCH_METHOD": method,
                "BENCH_AUTH": headers["Authorization"],
                "BENCH_BODY": json.dumps(body) if body is not None else "",
            }
            script = str(Path(__file__).resolve().parent / "_wrk.lua")
            cmd = ["wrk", "-t2", f"-c{args.connections}", f"-d{max(1, round(seconds))}s", "-s", script, url + path]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
            return dict(json.loads(line.removeprefix("WRKJSON ")))

        def measure_wrk(method: str, path: str, body: object | None) -> dict[str, object]:
            nonlocal failed
            wrk(method, path, body, 2)  # warm-up
            cpu0 = server_cpu()
            t0 = time.perf_counter()
            res = wrk(method, path, body, args.seconds)
            wall = time.perf_counter() - t0
            cpu1 = server_cpu()
            bad = res["non_2xx_3xx"] + res["socket_errors"]
            failed = failed or bad > MAX_ERROR_RATE * max(1, res["requests"])
            seconds = res["duration_us"] / 1e6
            return {
                "loadgen": "wrk -t2 (compiled)",
                "requests": res["requests"],
                "failed": bad,
                "req_per_s": round((res["requests"] - bad) / seconds, 1),
                "p50_ms": round(res["p50_us"] / 1000, 1),
                "p90_ms": round(res["p90_us"] / 1000, 1),
                "p99_ms": round(res["p99_us"] / 1000, 1),
                "max_ms": round(res["max_us"] / 1000, 1),
                "server_cpu_cores": round((cpu1 - cpu0) / wall, 2),
            }

        get = measure("GET", f"/v1/organizations/{org}", None)
        create = measure("POST", "/v1/api-keys", {"name": "bench"})
        result = {
            "benchmark": "api",
            "date": datetime.now(UTC).date().isoformat(),
            "machine": machine(),
            "database": "external" if os.environ.get("GPUFLEET_DATABASE_URL") else "embedded PostgreSQL 18",
            "connections": args.connections,
            "loadgen": args.loadgen,
            "seconds": args.seconds,
            "server_workers": args.workers,
            "logging": "default (INFO, access log on)" if args.logging == "default" else "off (warning, no access log)",
            "get_one_object": get,
            "create": create,
            "targets": {"get_req_per_s": 1500, "create_req_per_s": 800, "p99_ms": 50},
        }
        print(json.dumps(result))
    finally:
        up.stop()
    if failed:
        sys.exit(f"more than {MAX_ERROR_RATE:.1%} of the requests failed: see the statuses above")


if __name__ == "__main__":
    main()
