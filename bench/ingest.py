"""Benchmark: GPU metric ingestion. 1,000 simulated hosts x 8 GPUs heartbeating against one server.

Starts `gpufleet up` in a subprocess (embedded PostgreSQL in a temporary data dir, unless
GPUFLEET_DATABASE_URL is set), registers the hosts through /v1/agent/register, then drives
heartbeats with a raw asyncio keep-alive load generator (each heartbeat: the host's 8 GPUs and
10 samples per GPU, i.e. 10 s at 1 Hz):

* nominal: every host heartbeats every 10 s, spread evenly (100 heartbeats/s, 8,000 samples/s);
  latency is measured from each heartbeat's scheduled time (queueing included);
* capacity: heartbeats back to back on N connections, to find the sustained ingest rate.

Samples are counted in the database (the fleet summary's count), server CPU with psutil
(uvicorn process and PostgreSQL separately). Then one real `gpufleet agent --simulate
8xH100-80GB` process is measured for RSS and CPU over --agent-seconds. Prints one JSON object.

    python bench/ingest.py [--hosts 1000] [--nominal-seconds 20] [--capacity-seconds 15] [--connections 32]
                           [--workers N] [--agent-seconds 0: skip the agent]

``--workers N`` runs the server with N worker processes (GPUFLEET_WORKERS; no local agent then);
server CPU is every gpufleet process of the run (the supervisor and its workers), the local
agent and PostgreSQL excluded. The capacity phase also reports CPU ms per stored heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine
from _up import start_server

GPUS = 8
SAMPLES = 10  # per GPU per heartbeat: 10 s at 1 Hz


class Fleet:
    """Pre-built heartbeat bodies: per host a prefix, per tick the timestamps; cheap to assemble."""

    def __init__(self, credentials: list[str], base: datetime) -> None:
        self.credentials = credentials
        self.base = base
        self.ticks: dict[int, str] = {}
        cols = ",".join(
            f'"{name}":[{",".join([value] * SAMPLES)}]'
            for name, value in (
                ("utilization_pct", "37.5"),
                ("memory_used_mb", "20480"),
                ("temperature_c", "61"),
                ("power_w", "312.4"),
                ("ecc_uncorrected", "0"),
                ("xid_errors", "0"),
                ("process_count", "0"),
            )
        )
        self.cols = cols
        self.gpus = [json.dumps(gpu_list(i)) for i in range(len(credentials))]

    def ts(self, tick: int) -> str:
        got = self.ticks.get(tick)
        if got is None:
            start = self.base + timedelta(seconds=tick * SAMPLES)
            got = json.dumps([(start + timedelta(seconds=s)).isoformat() for s in range(SAMPLES)])
            self.ticks[tick] = got
        return got

    def request(self, host: int, tick: int, port: int) -> bytes:
        ts = self.ts(tick)
        series = ",".join(f'{{"uuid":"{uuid(host, g)}","ts":{ts},{self.cols}}}' for g in range(GPUS))
        body = f'{{"gpus":{self.gpus[host]},"metrics":[{series}]}}'.encode()
        head = (
            f"POST /v1/agent/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
            f"Authorization: Bearer {self.credentials[host]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


def uuid(host: int, gpu: int) -> str:
    return f"GPU-{host:08x}-0000-4000-8000-{gpu:012x}"


def gpu_list(host: int) -> list[dict[str, Any]]:
    return [
        {"uuid": uuid(host, g), "index": g, "model": "H100-80GB", "memory_mb": 81559, "simulated": True}
        for g in range(GPUS)
    ]


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
    await reader.readexactly(length)
    return status


async def register_all(url: str, headers: dict[str, str], hosts: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        r = await c.post("/v1/join-tokens", json={"name": "bench"}, headers=headers)
        token = r.json()["token"]
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            body = {
                "name": f"bench-{i:04d}",
                "facts": {"hostname": f"bench-{i:04d}", "cpu_cores": 64, "ram_mb": 524288, "simulated": True},
                "gpus": gpu_list(i),
            }
            async with sem:
                resp = await c.post("/v1/agent/register", json=body, headers={"Authorization": f"Bearer {token}"})
            resp.raise_for_status()
            return str(resp.json()["credential"])

        return list(await asyncio.gather(*(one(i) for i in range(hosts))))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else 0.0


async def nominal(fleet: Fleet, port: int, seconds: float, interval: float, connections: int) -> dict[str, Any]:
    """Open loop: host i heartbeats at t0 + (i / hosts + k) * interval; latency from that time."""
    hosts = len(fleet.credentials)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter() + 0.5
    tasks = []

    async def beat(host: int, tick: int, at: float) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(fleet.request(host, tick, port))
            status = await read_response(reader)
        finally:
            pool.put_nowait((reader, writer))
        latencies.append((time.perf_counter() - at) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    n = int(seconds / interval * hosts)
    for j in range(n):
        k, host = divmod(j, hosts)
        at = t0 + (host / hosts + k) * interval
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(beat(host, k, at)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {
        "heartbeats": len(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "offered_samples_per_s": round(len(latencies) * GPUS * SAMPLES / wall),
        "p50_ms": pct(latencies, 0.5),
        "p90_ms": pct(latencies, 0.9),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": round(max(latencies), 2),
    }


async def capacity(fleet: Fleet, port: int, seconds: float, connections: int) -> dict[str, Any]:
    hosts = len(fleet.credentials)
    counter = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                j = counter[0]
                counter[0] += 1
                k, host = divmod(j, hosts)
                t = time.perf_counter()
                writer.write(fleet.request(host, 100 + k, port))
                status = await read_response(reader)
                latencies.append((time.perf_counter() - t) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - t0
    return {
        "connections": connections,
        "heartbeats": len(latencies),
        # Successes only (2xx): an error answered fast is not throughput.
        "heartbeats_per_s": round(sum(v for k, v in statuses.items() if k < 300) / wall, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "seconds": round(wall, 2),
    }


def per_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def postgres_procs(server: psutil.Process, data_dir: Path | None) -> list[psutil.Process]:
    """The embedded PostgreSQL of this run: its postmaster (found by data dir) and every backend."""
    found = [p for p in server.children(recursive=True) if "postgres" in p.name()]
    if data_dir is not None:
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "postgres" and str(data_dir) in " ".join(p.info["cmdline"] or []):
                found += [p, *p.children(recursive=True)]
    return list({p.pid: p for p in found}.values())


def server_procs(server: psutil.Process, postgres: set[int]) -> list[psutil.Process]:
    """The server and its worker processes: every descendant but PostgreSQL and the local agent."""
    out = [server]
    for p in server.children(recursive=True):
        try:
            if p.pid not in postgres and "postgres" not in p.name() and "gpufleet.agent" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def count_samples(url: str, headers: dict[str, str]) -> int:
    r = httpx.get(f"{url}/v1/fleet/summary", params={"window_minutes": 1440}, headers=headers, timeout=120)
    return int(r.json()["samples_in_window"])


def measure(
    url: str, headers: dict[str, str], find: Callable[[], dict[str, list[psutil.Process]]], work: Any
) -> dict[str, Any]:
    before = count_samples(url, headers)
    cpu0 = {k: per_pid(v) for k, v in find().items()}
    t0 = time.perf_counter()
    out: dict[str, Any] = asyncio.run(work)
    wall = time.perf_counter() - t0
    # The process list again at the end: a pool opens PostgreSQL backends under load, and a
    # process that started within the window counts from zero.
    end = {k: per_pid(v) for k, v in find().items()}
    used = {k: sum(t - cpu0.get(k, {}).get(pid, 0.0) for pid, t in v.items()) for k, v in end.items()}
    stored = count_samples(url, headers) - before
    out["samples_stored"] = stored
    out["samples_per_s"] = round(stored / wall)
    out["cpu_cores"] = {k: round(v / wall, 2) for k, v in used.items()}
    ok = sum(v for k, v in out.get("statuses", {}).items() if int(k) < 300)
    if ok:
        out["cpu_ms_per_heartbeat"] = {k: round(1000 * v / ok, 3) for k, v in used.items()}
    return out


def agent_footprint(url: str, headers: dict[str, str], base: Path, seconds: float) -> dict[str, Any]:
    token = httpx.post(f"{url}/v1/join-tokens", json={"name": "agent"}, headers=headers).json()["token"]
    log = (base / "agent.log").open("wb")
    cmd = [
        str(Path(sys.executable).parent / "gpufleet"),
        "agent",
        "--server",
        url,
        "--join-token",
        token,
        "--simulate",
        "8xH100-80GB",
        "--name",
        "footprint",
        "--state-dir",
        str(base / "agent"),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(5)  # start-up and registration
        c0 = p.cpu_times()
        t0 = time.perf_counter()
        rss_max = 0
        while time.perf_counter() - t0 < seconds:
            rss_max = max(rss_max, p.memory_info().rss)
            time.sleep(1)
        c1 = p.cpu_times()
        wall = time.perf_counter() - t0
        host_id = json.loads((base / "agent" / "host-credential.json").read_text())["host_id"]
        host = httpx.get(f"{url}/v1/hosts/{host_id}", headers=headers).json()
        return {
            "cmd": "gpufleet agent --simulate 8xH100-80GB",
            "seconds": round(wall, 1),
            "rss_mb": round(p.memory_info().rss / 2**20, 1),
            "rss_max_mb": round(rss_max / 2**20, 1),
            "cpu_pct_of_core": round(100 * ((c1.user + c1.system) - (c0.user + c0.system)) / wall, 2),
            "heartbeating": host["status"] == "ready" and host["last_heartbeat_at"] != host["registered_at"],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    global SAMPLES
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--nominal-seconds", type=float, default=20.0)
    ap.add_argument("--capacity-seconds", type=float, default=15.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--agent-seconds", type=float, default=30.0, help="0: skip the agent's footprint.")
    ap.add_argument("--workers", type=int, default=1, help="Server worker processes (GPUFLEET_WORKERS).")
    ap.add_argument("--samples-per-gpu", type=int, default=10, help="Per heartbeat (10: 10 s at 1 Hz).")
    ap.add_argument("--url", help="Use this running server instead of starting one (with --api-key).")
    ap.add_argument("--api-key", help="An owner or admin key of --url.")
    args = ap.parse_args()
    SAMPLES = args.samples_per_gpu
    if args.url:
        port = int(args.url.rsplit(":", 1)[1])
        run(args, args.url, port, {"Authorization": f"Bearer {args.api_key}"}, {}, Path(tempfile.mkdtemp()))
        return

    # Rate limits off: a thousand hosts heartbeat from one address.
    up = start_server(
        ["up"],
        {
            "GPUFLEET_RATE_LIMIT_KEY_PER_MINUTE": "0",
            "GPUFLEET_RATE_LIMIT_IP_PER_MINUTE": "0",
            "GPUFLEET_WORKERS": str(args.workers),
        },
        keep_database_url=True,
    )
    try:
        port = int(up.url.rsplit(":", 1)[1])
        run(args, up.url, port, up.headers, {"server": up.proc.pid}, up.base)
    finally:
        up.stop()


def run(
    args: argparse.Namespace, url: str, port: int, headers: dict[str, str], pids: dict[str, int], base: Path
) -> None:
    def procs() -> dict[str, list[psutil.Process]]:
        mine = {"load_generator": [psutil.Process()]}
        if "server" not in pids:
            return mine
        server = psutil.Process(pids["server"])
        pg = postgres_procs(server, base / "data")
        return {"server": server_procs(server, {p.pid for p in pg}), "postgres": pg, **mine}

    t0 = time.perf_counter()
    credentials = asyncio.run(register_all(url, headers, args.hosts))
    registration_s = time.perf_counter() - t0
    fleet = Fleet(credentials, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6))
    nom = measure(url, headers, procs, nominal(fleet, port, args.nominal_seconds, args.interval, 64))
    cap = measure(url, headers, procs, capacity(fleet, port, args.capacity_seconds, args.connections))
    agent = agent_footprint(url, headers, base, args.agent_seconds) if args.agent_seconds > 0 else None
    result = {
        "benchmark": "ingest",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "database": "external" if os.environ.get("GPUFLEET_DATABASE_URL") else "embedded PostgreSQL",
        "workers": args.workers,
        "hosts": args.hosts,
        "gpus": args.hosts * GPUS,
        "samples_per_heartbeat": GPUS * SAMPLES,
        "registration_s": round(registration_s, 1),
        "nominal_10s_interval": nom,
        "capacity": cap,
        "agent": agent,
        "targets": {"samples_per_s": 50_000, "heartbeat_p99_ms": 100, "agent_rss_mb": 60, "agent_cpu_pct": 1},
    }
    failed = {name: error_rate(part["statuses"]) for name, part in (("nominal", nom), ("capacity", cap))}
    result["error_rate"] = failed
    print(json.dumps(result))
    if any(rate > MAX_ERROR_RATE for rate in failed.values()):
        sys.exit(f"more than {MAX_ERROR_RATE:.1%} of the heartbeats failed: {failed}")


def error_rate(statuses: dict[str, int]) -> float:
    total = sum(statuses.values())
    return sum(v for k, v in statuses.items() if int(k) >= 300) / total if total else 1.0


if __name__ == "__main__":
    main()
