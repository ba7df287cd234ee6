"""The server's Prometheus metrics, kept by prometheus-client.

Counters and histograms are per process. With one process each app has its own registry; with
several workers (``gpufleet server --workers N``) ``PROMETHEUS_MULTIPROC_DIR`` is set before the
workers start, every worker writes its values there, and whichever worker answers a scrape reads
them all (prometheus-client's multiprocess mode). Several replicas are several scrape targets:
``sum()`` over them is the fleet's total.

The fleet's state (GPUs, samples, queues, hosts, webhook backlogs) is read from the database at
scrape time, and only by the process that leads the scheduler, so it is exported once however
many replicas and workers run (``services/fleet_metrics.py``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# The id of the request being served ("-" outside one): api/middleware.RequestId sets it.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CYCLE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DECISION_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.1)
WAIT_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
MAX_DECISIONS_OBSERVED = 2000  # per scheduler cycle (an even sample beyond that)
UNMATCHED = "<unmatched>"  # requests no route answered: one label value, not one per path

# `_created` series double the output and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the request it was logged in (``request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, the access log's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for extra in ("method", "path", "status", "duration_ms", "client"):
            if hasattr(record, extra):
                doc[extra] = getattr(record, extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str, *, json_lines: bool = False) -> None:
    """The server's logging: text lines as before, or JSON lines (``GPUFLEET_LOG_JSON``); both
    carry the request id (JSON as a field, text through ``%(request_id)s`` for who adds it)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class ServerMetrics:
    """Every metric one server process keeps; the app holds one (``app.state.metrics``)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode the values live in files and the scrape reads them all; registering
        # the metrics as well would export this process's twice.
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "gpufleet_http_requests",
            "HTTP requests handled, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gpufleet_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.scheduler_cycles = Counter("gpufleet_scheduler_cycles", "Scheduler cycles run.", registry=r)
        self.scheduler_cycle_duration = Histogram(
            "gpufleet_scheduler_cycle_duration_seconds",
            "Time one scheduler cycle took (snapshot, decisions, commits).",
            buckets=CYCLE_BUCKETS_S,
            registry=r,
        )
        self.scheduler_decision = Histogram(
            "gpufleet_scheduler_decision_seconds",
            "Time the allocator took to decide on one pending job.",
            buckets=DECISION_BUCKETS_S,
            registry=r,
        )
        self.placement_wait = Histogram(
            "gpufleet_job_placement_wait_seconds",
            "How long a job waited in the queue before it was placed (placement latency).",
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.placements = Counter(
            "gpufleet_scheduler_placements", "Placements committed (jobs given their GPUs).", registry=r
        )
        self.conflicts = Counter(
            "gpufleet_allocation_conflicts",
            "Placements refused by the database because capacity changed (retried).",
            registry=r,
        )
        self.allocation_failed = Counter(
            "gpufleet_jobs_allocation_failed", "Jobs no host could ever run (allocation_failed).", registry=r
        )
        self.scheduler_errors = Counter("gpufleet_scheduler_errors", "Scheduler cycles that failed.", registry=r)
        self.leader = Gauge(
            "gpufleet_scheduler_leader",
            "1 where this process leads the scheduler (and exports the fleet gauges).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "gpufleet_webhook_deliveries",
            "Webhook delivery attempts, by outcome (succeeded, failed: retried later, dead: given up).",
            ["outcome"],
            registry=r,
        )
        self.webhook_lag = Histogram(
            "gpufleet_webhook_delivery_lag_seconds",
            "From the event's delivery being queued to its successful delivery.",
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.heartbeats = Counter("gpufleet_agent_heartbeats", "Agent heartbeats received.", registry=r)
        self.samples = Counter(
            "gpufleet_gpu_samples_ingested", "GPU metric samples stored from agents' heartbeats.", registry=r
        )
        self.pool_size = Gauge(
            "gpufleet_db_pool_size", "Open runtime database connections.", multiprocess_mode="livesum", registry=r
        )
        self.pool_idle = Gauge(
            "gpufleet_db_pool_idle", "Idle runtime database connections.", multiprocess_mode="livesum", registry=r
        )

    # ------------------------------------------------------------------ what the server reports

    def request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        template = route or UNMATCHED
        self.http_requests.labels(method, template, str(status)).inc()
        self.http_duration.labels(method, template).observe(seconds)

    def cycle(
        self,
        *,
        seconds: float,
        placed: int,
        conflicts: int,
        failed: int,
        decisions_s: Iterable[float],
        waits_s: Iterable[float],
    ) -> None:
        self.scheduler_cycles.inc()
        self.scheduler_cycle_duration.observe(seconds)
        self.placements.inc(placed)
        self.conflicts.inc(conflicts)
        self.allocation_failed.inc(failed)
        decisions = list(decisions_s)
        # A cycle over a long queue makes 100,000 decisions; observing each would add ~0.1 s to
        # it. An even sample keeps the quantiles and bounds the cost (the count is the sample's).
        step = max(1, -(-len(decisions) // MAX_DECISIONS_OBSERVED))
        for d in decisions[::step]:
            self.scheduler_decision.observe(d)
        for w in waits_s:
            self.placement_wait.observe(max(0.0, w))

    def deliveries(self, outcomes: Sequence[tuple[str, datetime | None]]) -> None:
        """(outcome, when the delivery was queued) of each attempt made."""
        now = datetime.now(UTC)
        for outcome, queued_at in outcomes:
            self.webhook_deliveries.labels(outcome).inc()
            if outcome == "succeeded" and queued_at is not None:
                self.webhook_lag.observe(max(0.0, (now - queued_at).total_seconds()))

    def heartbeat(self, samples: int) -> None:
        self.heartbeats.inc()
        self.samples.inc(samples)

    def exposition(self) -> bytes:
        """This process's metrics (one process), or every worker's (multiprocess mode)."""
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """A worker that stops takes its live gauges (leader, pool) with it."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class Snapshot(Collector):
    """Metric families computed elsewhere (the fleet's gauges), exposed as they are."""

    def __init__(self, families: Sequence[object]) -> None:
        self.families = families

    def collect(self) -> Iterable[object]:  # type: ignore[override]
        return iter(self.families)


def render(families: Sequence[object]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return generate_latest(registry)
