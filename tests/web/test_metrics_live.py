"""/metrics of a live server with an agent: valid exposition (parsed by prometheus_client), the
fleet exported once across replicas, the Grafana dashboard's every query on an exported metric,
and the agent's own /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.agent.metrics import serve
from gpufleet.db.pool import RUNTIME_ROLE
from tests.liveserver import LiveServer, free_port
from tests.web.conftest import ROOT, Site

GRAFANA = ROOT / "docs" / "grafana" / "gpufleet.json"


def _families(text: str) -> dict[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """family -> sample name -> [(labels, value)]"""
    out: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}
    for f in text_string_to_metric_families(text):
        by_name = out.setdefault(f.name, {})
        for s in f.samples:
            by_name.setdefault(s.name, []).append((s.labels, s.value))
        # A family with no samples yet still names what it exports.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(f.type, [""])
        for suffix in suffixes:
            by_name.setdefault(f.name + suffix, [])
    return out


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    return r.text


async def test_metrics_describe_the_fleet_once(site: Site) -> None:
    families = _families(await _metrics(site.url))
    assert families["gpufleet_scheduler_leader"]["gpufleet_scheduler_leader"] == [({}, 1.0)]
    org = site.owner.org.slug
    gpus = families["gpufleet_fleet_gpus"]["gpufleet_fleet_gpus"]
    assert sum(v for labels, v in gpus if labels["org"] == org and labels["host"] == site.host_name) == 2
    assert all(labels["simulated"] == "true" and labels["model"] == "A100-80GB" for labels, _ in gpus)
    util = families["gpufleet_gpu_utilization_percent"]["gpufleet_gpu_utilization_percent"]
    assert sorted(labels["gpu"] for labels, _ in util) == ["0", "1"] and all(0 <= v <= 100 for _, v in util)
    total = families["gpufleet_gpu_memory_total_bytes"]["gpufleet_gpu_memory_total_bytes"]
    assert {v for _, v in total} == {81920 * 1024 * 1024}
    (lag,) = families["gpufleet_host_heartbeat_age_seconds"]["gpufleet_host_heartbeat_age_seconds"]
    assert lag[0]["host"] == site.host_name and 0 <= lag[1] < 30
    assert families["gpufleet_agent_heartbeats"]["gpufleet_agent_heartbeats_total"][0][1] > 0
    assert families["gpufleet_gpu_samples_ingested"]["gpufleet_gpu_samples_ingested_total"][0][1] > 0
    routes = {labels["route"] for labels, _ in families["gpufleet_http_requests"]["gpufleet_http_requests_total"]}
    assert "/v1/agent/heartbeat" in routes and not any(re.search(r"[0-9a-f]{8}-", r) for r in routes)
    # A second replica on the same database: it does not lead, so it exports no fleet gauges and
    # sum() over both counts each GPU once.
    replica = LiveServer(site.pg.dsn(site.db_name), site.pg.dsn(site.db_name, user=RUNTIME_ROLE), background=True)
    await asyncio.to_thread(replica.start)
    try:
        other = _families(await _metrics(replica.url))
        assert other["gpufleet_scheduler_leader"]["gpufleet_scheduler_leader"] == [({}, 0.0)]
        assert "gpufleet_fleet_gpus" not in other and "gpufleet_queue_depth" not in other
        assert "gpufleet_http_requests" in other  # its own counters, as every replica
    finally:
        await asyncio.to_thread(replica.stop)


async def test_every_grafana_query_uses_an_exported_metric(site: Site) -> None:
    families = _families(await _metrics(site.url))
    exported = {name for by_name in families.values() for name in by_name}
    dashboard = json.loads(GRAFANA.read_text())
    queries: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    queries.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    assert len(queries) > 30
    used = {m for q in queries for m in re.findall(r"\bgpufleet_[a-z0-9_]+", q)}
    assert used and used <= exported, sorted(used - exported)
    # ... and what the dashboard groups or filters by is a label those metrics carry.
    labels = {
        name: {k for labels, _ in samples for k in labels}
        for by_name in families.values()
        for name, samples in by_name.items()
    }
    for q in queries:
        for grouping, metric in re.findall(r"by \(([a-z_, ]+)\) \((?:rate\()?(gpufleet_[a-z0-9_]+)", q):
            wanted = {g.strip() for g in grouping.split(",")} - {"le"}
            if labels[metric]:  # a family with samples: its labels are known
                assert wanted <= labels[metric], (q, wanted - labels[metric])


async def test_the_agent_serves_its_own_metrics(site: Site) -> None:
    port = free_port()
    server = serve(site.agent, port)
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        server.shutdown()
        server.server_close()
    families = _families(text)
    util = families["gpufleet_agent_gpu_utilization_percent"]["gpufleet_agent_gpu_utilization_percent"]
    assert sorted(labels["gpu"] for labels, _ in util) == ["0", "1"]
    assert families["gpufleet_agent_gpus"]["gpufleet_agent_gpus"] == [({}, 2.0)]
    assert families["gpufleet_agent_heartbeats_accepted"]["gpufleet_agent_heartbeats_accepted_total"][0][1] > 0


def test_grafana_files_are_valid() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "gpufleet" and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert (ROOT / "docs" / "grafana" / "prometheus.yml").read_text().count("metrics_path: /metrics") == 1
    assert Path(GRAFANA).stat().st_size < 100_000
