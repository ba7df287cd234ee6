"""Capacity planning on workload traces: trace loading, the allocation protocol, its metrics."""

from gpufleet.simulation.protocol import (
    PolicyBounds,
    SeedResult,
    Summary,
    arrivals,
    fragmentation_pct,
    make_policy,
    parse_seeds,
    report,
    run,
)
from gpufleet.simulation.traces import TraceError, load_hosts, load_jobs

__all__ = [
    "PolicyBounds",
    "SeedResult",
    "Summary",
    "TraceError",
    "arrivals",
    "fragmentation_pct",
    "load_hosts",
    "load_jobs",
    "make_policy",
    "parse_seeds",
    "report",
    "run",
]
