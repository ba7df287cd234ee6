"""Benchmark: several replicas on one PostgreSQL serving a simulated fleet, while the scheduler places jobs.

Full size is the issue's 50,000-GPU fleet: 6,250 hosts x 8 GPUs, each host heartbeating every 10 s
with its samples at 1 Hz (80 samples a heartbeat), spread over 3 `gpufleet server` replicas on one
PostgreSQL (the embedded one, shared by the replicas, unless GPUFLEET_DATABASE_URL is set).

* The hosts are registered through /v1/agent/register, then simulated by one asyncio load generator:
  each host is a closed loop like the real agent (heartbeat, then wait what is left of the 10 s; a
  slow answer means the next heartbeat carries more samples), over keep-alive connections spread
  across the replicas. Heartbeat latency counts the wait for a connection.
* Ingest lag is, per heartbeat, how old its oldest sample is when the answer arrives: 10 s of
  batching by design, the rest is delay; it grows over the run when the fleet is not sustained.
* The scheduler runs in its own process (the replicas' are turned off, so it leads): the same
  `Scheduler.run` a replica runs, timed per cycle. A client submits jobs (1-8 GPUs) at a fixed
  rate through the replicas; time to placement is `allocated_at - created_at` (database clock).
* CPU per process group (replicas, PostgreSQL, scheduler, load generator) with psutil, and the
  database's work from pg_stat_database.

    python bench/fleet_scale.py [--hosts 6250] [--replicas 3] [--seconds 60] [--warmup 20] [--jobs-per-s 5]

Prints one JSON object; exits non-zero when more than 0.1 % of the heartbeats failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine
from _up import free_port

GPUS = 8
INTERVAL_S = 10.0
MAX_SAMPLES = 5_000  # the agent's batch_samples: a backlog goes out in several heartbeats
FIELDS = (
    ("utilization_pct", "37.5"),
    ("memory_used_mb", "20480"),
    ("temperature_c", "61"),
    ("power_w", "312.4"),
    ("ecc_uncorrected", "0"),
    ("xid_errors", "0"),
    ("process_count", "0"),
)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 3) if values else 0.0


def gpu_uuid(host: int, gpu: int) -> str:
    return f"GPU-{host:08x}-0000-4000-8000-{gpu:012x}"


def gpu_list(host: int) -> list[dict[str, Any]]:
    return [
        {"uuid": gpu_uuid(host, g), "index": g, "model": "H100-80GB", "memory_mb": 81559, "simulated": True}
        for g in range(GPUS)
    ]


# ------------------------------------------------------------------------------------------ replicas


@dataclass
class Cluster:
    base: Path
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    key: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_") or k == "GPUFLEET_DATABASE_URL"}
        return {
            **env,
            "GPUFLEET_DATA_DIR": str(self.base / "data"),
            "GPUFLEET_CONFIG_DIR": str(self.base / "cfg"),
            "GPUFLEET_RATE_LIMIT_KEY_PER_MINUTE": "0",
            "GPUFLEET_RATE_LIMIT_IP_PER_MINUTE": "0",
            "GPUFLEET_LOG_LEVEL": "warning",  # no access-log line per heartbeat
            "GPUFLEET_SCHEDULER_ENABLED": "false",  # the scheduler process below leads instead
            "GPUFLEET_DATABASE_POOL_MAX": "12",
        }

    def start(self, n: int) -> None:
        for i in range(n):
            port = free_port()
            log = (self.base / f"replica-{i}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "gpufleet.cli.main", "server", "--port", str(port)],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.replicas.append(proc)
            self.urls.append(f"http://127.0.0.1:{port}")
            self._ready(i)  # one at a time: the first starts the embedded database and bootstraps

    def _ready(self, i: int) -> None:
        deadline = time.monotonic() + 180
        cfg = self.base / "cfg" / "config.toml"
        while time.monotonic() < deadline:
            if self.replicas[i].poll() is not None:
                raise SystemExit(f"replica {i} exited: {(self.base / f'replica-{i}.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError, IndexError, httpx.HTTPError):
                self.key = self.key or cfg.read_text().split('api_key = "')[1].split('"')[0]
                if self.key and httpx.get(f"{self.urls[i]}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise SystemExit(f"replica {i} did not become ready")

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Read again at each measurement: PostgreSQL backends come and go."""
        servers = [psutil.Process(p.pid) for p in self.replicas]
        return {"replicas": servers, "postgres": postgres_processes(self.base / "data")}

    def stop(self) -> None:
        for proc in self.replicas:
            proc.send_signal(signal.SIGTERM)
        for proc in self.replicas:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL (postmaster found by its data dir, and its children); with
    GPUFLEET_DATABASE_URL, every postgres process on this machine (none if it runs elsewhere)."""
    external = bool(os.environ.get("GPUFLEET_DATABASE_URL"))
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] != "postgres":
            continue
        if external or str(data_dir) in " ".join(p.info["cmdline"] or []):
            found[p.pid] = p
            for c in p.children(recursive=True):
                found[c.pid] = c
    return list(found.values())


def cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out: dict[int, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process that started in between counts whole (pools
    open connections as the load grows, and each is a new PostgreSQL backend)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


# ------------------------------------------------------------------------------------------ the fleet


async def register_all(urls: list[str], headers: dict[str, str], hosts: int) -> list[str]:
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(f"{urls[0]}/v1/join-tokens", json={"name": "fleet-scale"}, headers=headers)
        r.raise_for_status()
        token = r.json()["token"]
        sem = asyncio.Semaphore(24)

        async def one(i: int) -> str:
            body = {
                "name": f"scale-{i:05d}",
                "facts": {"hostname": f"scale-{i:05d}", "cpu_cores": 64, "ram_mb": 524288, "simulated": True},
                "gpus": gpu_list(i),
            }
            async with sem:
                resp = await c.post(
                    f"{urls[i % len(urls)]}/v1/agent/register", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            resp.raise_for_status()
            return str(resp.json()["credential"])

        return list(await asyncio.gather(*(one(i) for i in range(hosts))))


class Bodies:
    """Heartbeat bodies assembled from cached pieces: the load generator must stay cheap."""

    def __init__(self, hosts: int) -> None:
        self.gpus = [json.dumps(gpu_list(i)) for i in range(hosts)]
        self._cols: dict[int, str] = {}
        self._iso: dict[int, str] = {}

    def cols(self, n: int) -> str:
        got = self._cols.get(n)
        if got is None:
            got = ",".join(f'"{name}":[{",".join([value] * n)}]' for name, value in FIELDS)
            self._cols[n] = got
        return got

    def iso(self, second: int) -> str:
        got = self._iso.get(second)
        if got is None:
            got = '"' + datetime.fromtimestamp(second, UTC).isoformat() + '"'
            self._iso[second] = got
        return got

    def heartbeat(self, host: int, seconds: range, credential: str, hostport: str) -> bytes:
        n = len(seconds)
        ts = "[" + ",".join(self.iso(s) for s in seconds) + "]"
        cols = self.cols(n)
        series = ",".join(f'{{"uuid":"{gpu_uuid(host, g)}","ts":{ts},{cols}}}' for g in range(GPUS))
        body = f'{{"gpus":{self.gpus[host]},"metrics":[{series}]}}'.encode()
        head = (
            f"POST /v1/agent/heartbeat HTTP/1.1\r\nHost: {hostport}\r\nConnection: keep-alive\r\n"
            f"Authorization: Bearer {credential}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
    await reader.readexactly(length)
    return status


@dataclass
class Window:
    """What is measured between ``start`` and ``end`` (monotonic): the warm-up is left out."""

    start: float
    end: float
    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[tuple[float, float]] = field(default_factory=list)  # (when, oldest sample's age)
    samples: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def has(self, t: float) -> bool:
        return self.start <= t < self.end


class Pool:
    """Keep-alive connections to one replica; a heartbeat waits for a free one."""

    def __init__(self, url: str, size: int) -> None:
        self.hostport = url.split("//", 1)[1]
        self.host, port = self.hostport.split(":")
        self.port = int(port)
        self.size = size
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self.free.put_nowait(None)  # opened on first use

    async def send(self, request: bytes) -> int:
        """One request; a kept-alive connection the server closed meanwhile (uvicorn closes idle
        ones after 5 s) is replaced and the request sent again, as an HTTP client library does."""
        conn = await self.free.get()
        for fresh in (False, True) if conn is not None else (True,):
            try:
                if fresh:
                    conn = await asyncio.open_connection(self.host, self.port)
                assert conn is not None
                conn[1].write(request)
                status = await read_response(conn[0])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
            self.free.put_nowait(conn)
            return status
        self.free.put_nowait(None)
        return 599


async def host_loop(
    i: int, credential: str, pool: Pool, bodies: Bodies, window: Window, stop_at: float, hosts: int, every: int
) -> None:
    """One simulated agent: heartbeat the samples taken since the last success (one per GPU every
    ``every`` seconds), then wait what is left of the 10 s."""
    await asyncio.sleep(i / hosts * INTERVAL_S)  # spread the fleet over the interval
    next_sample = (int(time.time()) - int(INTERVAL_S)) // every * every  # the first carries 10 s
    while True:
        want = time.monotonic()
        if want >= stop_at:
            return
        now_s = int(time.time())
        seconds = range(next_sample, max(now_s, next_sample + every), every)[: MAX_SAMPLES // GPUS]
        status = await pool.send(bodies.heartbeat(i, seconds, credential, pool.hostport))
        done = time.monotonic()
        if window.has(want):
            window.latencies_s.append(done - want)
            window.statuses[status] = window.statuses.get(status, 0) + 1
            if status < 300:
                window.samples += len(seconds) * GPUS
                window.lags_s.append((done, time.time() - next_sample))
        if status < 300:
            next_sample = seconds[-1] + every
        await asyncio.sleep(max(0.0, INTERVAL_S - (done - want)) if status < 300 else 1.0)


async def submit_jobs(
    urls: list[str], headers: dict[str, str], per_s: float, window: Window, stop_at: float
) -> dict[str, int]:
    counts = {"submitted": 0, "failed": 0}
    rng = random.Random(7)
    replicas = itertools.cycle(urls)
    async with httpx.AsyncClient(timeout=30, headers=headers) as c:
        while time.monotonic() < stop_at:
            body = {"name": "scale", "gpu_count": rng.choice((1, 1, 1, 2, 2, 4, 8)), "command": ["true"]}
            try:
                r = await c.post(f"{next(replicas)}/v1/jobs", json=body)
                ok = r.status_code == 201
            except httpx.HTTPError:
                ok = False
            if window.has(time.monotonic()):
                counts["submitted" if ok else "failed"] += 1
            await asyncio.sleep(1.0 / per_s)
    return counts


# ------------------------------------------------------------------------------------------ scheduler


def scheduler_child(seconds: float, warmup: float) -> None:
    """The leader's scheduler loop in this process, each cycle timed; prints JSON at the end."""
    from gpufleet.config import Settings
    from gpufleet.db.setup import open_database
    from gpufleet.scheduler.service import Scheduler
    from gpufleet.scheduler.types import CycleResult

    cycles: list[tuple[float, CycleResult]] = []

    class Timed(Scheduler):
        async def run_once(self) -> CycleResult:
            result = await super().run_once()
            cycles.append((time.monotonic(), result))
            return result

    async def main() -> None:
        settings = Settings(scheduler_enabled=True, database_pool_max=4)
        handle = await open_database(settings, migrate_now=False)
        stop = asyncio.Event()
        scheduler = Timed(handle.db, settings)
        task = asyncio.create_task(scheduler.run(stop))
        start = time.monotonic() + warmup
        await asyncio.sleep(warmup + seconds)
        stop.set()
        await task
        await handle.close()
        measured = [c for t, c in cycles if t >= start]
        busy = [c for c in measured if c.placed]
        durations = [c.duration_s for c in measured]
        print(
            json.dumps(
                {
                    "cycles": len(measured),
                    "cycles_placing": len(busy),
                    "placed": sum(c.placed for c in measured),
                    "cycle_p50_s": pct(durations, 0.5),
                    "cycle_p99_s": pct(durations, 0.99),
                    "cycle_max_s": round(max(durations), 3) if durations else 0.0,
                    "placing_cycle_p50_s": pct([c.duration_s for c in busy], 0.5),
                    "snapshot_p50_s": pct([c.snapshot_s for c in measured], 0.5),
                    # the placements' commits stream while the allocator decides: one figure for both
                    "decide_and_commit_p50_s": pct([c.decide_s for c in measured], 0.5),
                }
            )
        )

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ database


async def db_stats(env: dict[str, str]) -> dict[str, Any]:
    """pg_stat_database of gpufleet's database and the placement latency of recent jobs."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("GPUFLEET_")})
    from gpufleet.config import Settings
    from gpufleet.db.setup import open_database

    handle = await open_database(Settings(database_pool_max=2), migrate_now=False)
    try:
        async with handle.db.owner_connection() as conn:
            row = await conn.fetchrow(
                """select xact_commit, tup_inserted, tup_updated, blks_read, blks_hit, numbackends
                     from pg_stat_database where datname = current_database()"""
            )
            size = await conn.fetchval("select pg_database_size(current_database())")
            placement = await conn.fetch(
                """select extract(epoch from allocated_at - created_at)::float8 as s from jobs
                    where allocated_at is not null and created_at > now() - interval '10 minutes'"""
            )
        return {
            **{k: int(v) for k, v in dict(row).items()},
            "database_bytes": int(size),
            "placement_s": [float(r["s"]) for r in placement],
        }
    finally:
        await handle.close()


# ------------------------------------------------------------------------------------------ the run


async def load(
    cluster: Cluster, credentials: list[str], args: argparse.Namespace, window: Window
) -> tuple[dict[str, int], list[Pool]]:
    bodies = Bodies(len(credentials))
    pools = [Pool(url, args.connections_per_replica) for url in cluster.urls]
    hosts = len(credentials)
    loops = [
        host_loop(i, cred, pools[i % len(pools)], bodies, window, window.end, hosts, args.sample_every_s)
        for i, cred in enumerate(credentials)
    ]
    jobs = submit_jobs(cluster.urls, cluster.headers, args.jobs_per_s, window, window.end)
    *_, counts = await asyncio.gather(*loops, jobs)
    return counts, pools


async def measure(
    cluster: Cluster,
    credentials: list[str],
    args: argparse.Namespace,
    groups: Callable[[], dict[str, list[psutil.Process]]],
) -> tuple[Window, dict[str, int], dict[str, float]]:
    """The load for warm-up + seconds; CPU per process group over the measured window only."""
    t = time.monotonic()
    window = Window(t + args.warmup, t + args.warmup + args.seconds)
    cpu: dict[str, float] = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        before, t0 = {k: cpu_by_pid(v) for k, v in groups().items()}, time.perf_counter()
        await asyncio.sleep(max(0.0, window.end - time.monotonic()))
        wall = time.perf_counter() - t0
        after = {k: cpu_by_pid(v) for k, v in groups().items()}
        cpu.update({k: round(cpu_used(before[k], after[k]) / wall, 2) for k in after})

    watcher = asyncio.create_task(sample_cpu())
    counts, _ = await load(cluster, credentials, args, window)
    await watcher
    return window, counts, cpu


def costs(cpu: dict[str, float], heartbeats: int, samples: int, seconds: float) -> dict[str, float]:
    """CPU per heartbeat and per sample, for the capacity model (docs/capacity.md)."""
    if not heartbeats or not samples:
        return {}
    total = sum(cpu.values())
    busiest = max(cpu, key=lambda k: cpu[k])
    return {
        "samples_per_heartbeat": round(samples / heartbeats, 1),
        "replica_cpu_ms_per_heartbeat": round(cpu.get("replicas", 0) * seconds / heartbeats * 1000, 2),
        "postgres_cpu_ms_per_heartbeat": round(cpu.get("postgres", 0) * seconds / heartbeats * 1000, 2),
        "replica_cpu_us_per_sample": round(cpu.get("replicas", 0) * seconds / samples * 1e6, 2),
        "postgres_cpu_us_per_sample": round(cpu.get("postgres", 0) * seconds / samples * 1e6, 2),
        "cpu_cores_used": round(total, 2),
        "busiest": busiest,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=6250)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured")
    ap.add_argument("--warmup", type=float, default=20.0, help="run before measuring (the first round of heartbeats)")
    ap.add_argument("--jobs-per-s", type=float, default=5.0)
    ap.add_argument(
        "--sample-every-s", type=int, default=1, help="one sample per GPU this often (10: one per heartbeat)"
    )
    ap.add_argument("--connections-per-replica", type=int, default=64)
    ap.add_argument("--scheduler-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scheduler_child:
        scheduler_child(args.seconds, args.warmup)
        return

    base = Path(tempfile.mkdtemp(prefix="gpufleet-scale-"))
    base.chmod(0o755)  # as root, the embedded database's user must traverse it
    cluster = Cluster(base)
    sched: subprocess.Popen[str] | None = None
    try:
        cluster.start(args.replicas)
        t0 = time.perf_counter()
        credentials = asyncio.run(register_all(cluster.urls, cluster.headers, args.hosts))
        registration_s = time.perf_counter() - t0
        sched = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--scheduler-child",
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
            ],
            env=cluster.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        scheduler_process = psutil.Process(sched.pid)

        def groups() -> dict[str, list[psutil.Process]]:
            return {**cluster.processes(), "scheduler": [scheduler_process], "load_generator": [psutil.Process()]}

        before_db = asyncio.run(db_stats(cluster.env()))
        window, jobs, cpu = asyncio.run(measure(cluster, credentials, args, groups))
        stdout, _ = sched.communicate(timeout=120)
        scheduler = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
        after_db = asyncio.run(db_stats(cluster.env()))
    finally:
        if sched is not None and sched.poll() is None:
            sched.kill()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)

    heartbeats = sum(window.statuses.values())
    ok = sum(v for k, v in window.statuses.items() if k < 300)
    lags = [lag for _, lag in window.lags_s]
    half = window.start + args.seconds / 2
    offered = args.hosts * GPUS  # samples/s at 1 Hz (divided by --sample-every-s)
    placement = after_db.pop("placement_s")
    db_delta = {k: after_db[k] - before_db[k] for k in ("xact_commit", "tup_inserted", "tup_updated")}
    elapsed = args.warmup + args.seconds  # the database counters span the whole load, warm-up included
    result = {
        "benchmark": "fleet_scale",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "postgresql": "external" if os.environ.get("GPUFLEET_DATABASE_URL") else "embedded, shared by the replicas",
        "replicas": args.replicas,
        "hosts": args.hosts,
        "gpus": args.hosts * GPUS,
        "seconds": args.seconds,
        "registration_s": round(registration_s, 1),
        "heartbeats": {
            "offered_per_s": round(args.hosts / INTERVAL_S, 1),
            "completed_per_s": round(ok / args.seconds, 1),
            "statuses": {str(k): v for k, v in window.statuses.items()},
            "p50_s": pct(window.latencies_s, 0.5),
            "p99_s": pct(window.latencies_s, 0.99),
            "max_s": round(max(window.latencies_s), 3) if window.latencies_s else 0.0,
        },
        "samples": {
            "offered_per_s": round(offered / args.sample_every_s),
            "ingested_per_s": round(window.samples / args.seconds),
            "sustained_fraction": round(window.samples / args.seconds / offered * args.sample_every_s, 3),
        },
        "ingest_lag_s": {
            "p50": pct(lags, 0.5),
            "p99": pct(lags, 0.99),
            "p50_first_half": pct([lag for t, lag in window.lags_s if t < half], 0.5),
            "p50_second_half": pct([lag for t, lag in window.lags_s if t >= half], 0.5),
            "note": "age of a heartbeat's oldest sample when stored; 10 s is the batching itself",
        },
        "jobs": {**jobs, "placement_p50_s": pct(placement, 0.5), "placement_p99_s": pct(placement, 0.99)},
        "scheduler": scheduler,
        "cpu_cores": cpu,
        "costs": costs(cpu, ok, window.samples, args.seconds),
        "database": {
            **{f"{k}_per_s": round(v / elapsed) for k, v in db_delta.items()},
            "size_mb": round(after_db["database_bytes"] / 2**20),
            "backends": after_db["numbackends"],
        },
    }
    print(json.dumps(result))
    rate = (heartbeats - ok) / heartbeats if heartbeats else 1.0
    if rate > MAX_ERROR_RATE:
        sys.exit(f"{rate:.2%} of the heartbeats failed: {window.statuses}")


if __name__ == "__main__":
    main()
