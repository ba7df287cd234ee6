"""The agent's own /metrics (``gpufleet agent --metrics-port``): its GPUs' latest samples, its
jobs and its link to the server, read from the agent at scrape time.

It listens on 127.0.0.1 unless told otherwise: a node exporter for one host, scraped by a local
Prometheus agent or through the host's own network policy. The server's /metrics has the whole
fleet; this one answers while the server is unreachable too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gpufleet.agent.loop import Agent

MIB = 1024 * 1024


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        a = self.agent
        labels = ["gpu", "model", "uuid"]
        util = GaugeMetricFamily(
            "gpufleet_agent_gpu_utilization_percent", "Latest GPU utilization sample.", labels=labels
        )
        used = GaugeMetricFamily(
            "gpufleet_agent_gpu_memory_used_bytes", "Latest GPU memory-in-use sample.", labels=labels
        )
        temp = GaugeMetricFamily("gpufleet_agent_gpu_temperature_celsius", "Latest GPU temperature.", labels=labels)
        power = GaugeMetricFamily("gpufleet_agent_gpu_power_watts", "Latest GPU power draw.", labels=labels)
        info = {g.uuid: g for g in a.gpus}
        for uuid, s in list(a.latest.items()):
            gpu = info.get(uuid)
            values = [str(gpu.index) if gpu else "", gpu.model if gpu else "", uuid]
            if s.utilization_pct is not None:
                util.add_metric(values, s.utilization_pct)
            if s.memory_used_mb is not None:
                used.add_metric(values, s.memory_used_mb * MIB)
            if s.temperature_c is not None:
                temp.add_metric(values, s.temperature_c)
            if s.power_w is not None:
                power.add_metric(values, s.power_w)
        yield from (util, used, temp, power)
        yield GaugeMetricFamily("gpufleet_agent_gpus", "GPUs this agent found.", value=len(a.gpus))
        running = len(a.jobs.runs) if a.jobs is not None else 0
        yield GaugeMetricFamily("gpufleet_agent_jobs_running", "Job attempts this agent runs now.", value=running)
        yield GaugeMetricFamily(
            "gpufleet_agent_samples_buffered",
            "Samples taken and not yet accepted by the server (grows while it is unreachable).",
            value=len(a.buffer),
        )
        yield CounterMetricFamily(
            "gpufleet_agent_samples_dropped", "Samples lost to a full buffer.", value=a.dropped_samples
        )
        yield CounterMetricFamily(
            "gpufleet_agent_heartbeats_accepted", "Heartbeats the server accepted.", value=a.heartbeats_ok
        )


def serve(agent: Agent, port: int, host: str = "127.0.0.1") -> Any:
    """Serve /metrics on ``host:port`` from a daemon thread (it ends with the process); the
    server is returned (``shutdown()`` then ``server_close()`` stop it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
