"""/metrics: Prometheus text exposition of this replica's counters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from gpufleet.observability import HttpMetrics, gauge

router = APIRouter()


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """This replica's counters in the Prometheus text format (no credentials: bind it privately)."""
    http: HttpMetrics = request.app.state.http_metrics
    lines = list(http.lines())
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        s = scheduler.stats
        lines += gauge("gpufleet_scheduler_cycles_total", "Scheduler cycles run.", s.cycles, "counter")
        lines += gauge("gpufleet_scheduler_placements_total", "Placements committed.", s.placements, "counter")
        lines += gauge(
            "gpufleet_allocation_conflicts_total",
            "Placements refused by the database because capacity changed (retried).",
            s.conflicts,
            "counter",
        )
        lines += gauge(
            "gpufleet_jobs_allocation_failed_total", "Jobs no host could ever run.", s.allocation_failed, "counter"
        )
        lines += gauge("gpufleet_scheduler_errors_total", "Scheduler cycles that failed.", s.errors, "counter")
        lines += gauge(
            "gpufleet_scheduler_decision_p99_seconds", "Recent per-decision latency, p99.", s.decision_quantile(0.99)
        )
    pool = request.app.state.db.runtime_pool
    lines += gauge("gpufleet_db_pool_size", "Open runtime connections.", pool.get_size())
    lines += gauge("gpufleet_db_pool_idle", "Idle runtime connections.", pool.get_idle_size())
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
