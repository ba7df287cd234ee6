"""The fleet's gauges on /metrics, exported once across replicas and workers.

The numbers come from the database, which every replica shares: if each replica exported them,
``sum()`` in Prometheus would count every GPU once per replica. So only the process that leads
the scheduler exports them (``gpufleet_scheduler_leader`` says which). A scrape of any other
replica has none, and a dashboard sums over targets without double counting.

With several workers in the leader's replica, the scrape may reach a worker that does not lead:
the leading worker then also writes the gauges to a file in the multiprocess directory every
``interval_s``, and any worker of that replica serves the file while it is fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily

from gpufleet.db.pool import Database
from gpufleet.observability import ServerMetrics, multiprocess_dir, render
from gpufleet.repo import fleet_metrics as repo

if TYPE_CHECKING:
    from gpufleet.scheduler.service import Scheduler

log = logging.getLogger(__name__)

FILE_NAME = "gpufleet_fleet.prom"
MIB = 1024 * 1024


async def families(db: Database) -> list[GaugeMetricFamily]:
    async with db.system_transaction() as conn:
        gpus = await repo.gpu_counts(conn)
        samples = await repo.latest_samples(conn)
        jobs = await repo.job_counts(conn)
        hosts = await repo.hosts(conn)
        backlog = await repo.webhook_backlog(conn)
    by_gpu = ["org", "host", "model", "status", "simulated"]
    fleet = GaugeMetricFamily(
        "gpufleet_fleet_gpus", "GPUs of live hosts, by organization, host, model and status.", labels=by_gpu
    )
    for org, host, model, status, simulated, n in gpus:
        fleet.add_metric([org, host, model, status, "true" if simulated else "false"], n)
    per_gpu = ["org", "host", "gpu", "model", "uuid"]
    util = GaugeMetricFamily(
        "gpufleet_gpu_utilization_percent", "Latest GPU utilization sample (last 5 minutes).", labels=per_gpu
    )
    used = GaugeMetricFamily("gpufleet_gpu_memory_used_bytes", "Latest GPU memory-in-use sample.", labels=per_gpu)
    total = GaugeMetricFamily("gpufleet_gpu_memory_total_bytes", "GPU memory size.", labels=per_gpu)
    temp = GaugeMetricFamily("gpufleet_gpu_temperature_celsius", "Latest GPU temperature sample.", labels=per_gpu)
    power = GaugeMetricFamily("gpufleet_gpu_power_watts", "Latest GPU power draw sample.", labels=per_gpu)
    for org, host, index, model, uuid, memory_mb, u, m, t, w in samples:
        labels = [org, host, str(index), model, uuid]
        total.add_metric(labels, memory_mb * MIB)
        measured: tuple[tuple[GaugeMetricFamily, float | None, int], ...] = (
            (util, u, 1),
            (used, m, MIB),
            (temp, t, 1),
            (power, w, 1),
        )
        for family, value, scale in measured:
            if value is not None:
                family.add_metric(labels, value * scale)
    depth = GaugeMetricFamily("gpufleet_jobs", "Unfinished jobs by organization and status.", labels=["org", "status"])
    queue = GaugeMetricFamily("gpufleet_queue_depth", "Pending jobs by organization.", labels=["org"])
    oldest = GaugeMetricFamily(
        "gpufleet_queue_oldest_age_seconds",
        "How long the oldest pending job has waited, by organization.",
        labels=["org"],
    )
    for org, status, n, age in jobs:
        depth.add_metric([org, status], n)
        if status == "pending":
            queue.add_metric([org], n)
            oldest.add_metric([org], age)
    host_count = GaugeMetricFamily("gpufleet_hosts", "Live hosts by organization and status.", labels=["org", "status"])
    lag = GaugeMetricFamily(
        "gpufleet_host_heartbeat_age_seconds",
        "Seconds since each host's last heartbeat (database clock): the agent heartbeat lag.",
        labels=["org", "host", "status"],
    )
    counted: dict[tuple[str, str], int] = {}
    for org, host, status, beat_age in hosts:
        counted[(org, status)] = counted.get((org, status), 0) + 1
        if beat_age is not None:
            lag.add_metric([org, host, status], beat_age)
    for (org, status), n in sorted(counted.items()):
        host_count.add_metric([org, status], n)
    pending = GaugeMetricFamily(
        "gpufleet_webhook_deliveries_pending", "Webhook deliveries not yet delivered nor given up.", labels=["org"]
    )
    backlog_age = GaugeMetricFamily(
        "gpufleet_webhook_backlog_age_seconds",
        "How long the oldest undelivered webhook delivery has waited.",
        labels=["org"],
    )
    for org, n, age in backlog:
        pending.add_metric([org], n)
        backlog_age.add_metric([org], age)
    return [fleet, host_count, util, used, total, temp, power, depth, queue, oldest, lag, pending, backlog_age]


class FleetExporter:
    def __init__(
        self, db: Database, scheduler: Scheduler | None, metrics: ServerMetrics, *, interval_s: float = 15.0
    ) -> None:
        self.db = db
        self.scheduler = scheduler
        self.metrics = metrics
        self.interval_s = interval_s
        directory = multiprocess_dir()
        self.file = Path(directory) / FILE_NAME if directory else None

    @property
    def leading(self) -> bool:
        return self.scheduler is not None and self.scheduler.leader.leading

    def refresh_gauges(self) -> None:
        """This process's own gauges (whether it leads, its connections), set before a scrape
        reads them and every interval: with several workers a scrape reads every worker's."""
        self.metrics.leader.set(1 if self.leading else 0)
        pool = self.db.runtime_pool
        self.metrics.pool_size.set(pool.get_size())
        self.metrics.pool_idle.set(pool.get_idle_size())

    async def exposition(self) -> bytes:
        """The fleet's gauges for this scrape: fresh from the database where this process leads,
        the leading worker's file in a multiprocess replica, else nothing."""
        if self.leading:
            body = render(await families(self.db))
            self._write(body)
            return body
        return self._read_fresh()

    def _read_fresh(self) -> bytes:
        if self.file is not None:
            with contextlib.suppress(OSError):
                if time.time() - self.file.stat().st_mtime < 3 * self.interval_s:
                    return self.file.read_bytes()
        return b""

    def _write(self, body: bytes) -> None:
        if self.file is None:
            return
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(body)
        tmp.replace(self.file)  # atomic: a reader sees the old file or the new one

    async def run(self, stop: asyncio.Event) -> None:
        """Multiprocess mode: keep this worker's gauges current for scrapes answered by its
        siblings, and the fleet's file fresh while it leads."""
        if self.file is None:
            return
        while not stop.is_set():
            self.refresh_gauges()
            if self.leading:
                try:
                    self._write(render(await families(self.db)))
                except Exception:  # the next round retries; a scrape meanwhile sees the older file
                    log.exception("could not refresh the fleet metrics")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
