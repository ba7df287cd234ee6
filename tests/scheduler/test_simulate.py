"""The simulation protocol and the trace readers, on tiny traces."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gpufleet.scheduler.model import GpuState, HostState, JobRequest
from gpufleet.simulation import TraceError, arrivals, load_hosts, load_jobs, parse_seeds, run

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,2,T4\nn1,16000,131072,4,V100M16\n"
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\n"
    "p0,4000,1024,1,1000,,LS\n"
    "p1,2000,1024,1,500,T4|P100,LS\n"
    "p2,8000,1024,0,0,,BE\n"
    "p3,4000,1024,2,1000,V100M16,LS\n"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_openb_csv_is_read(tmp_path: Path) -> None:
    hosts = load_hosts(write(tmp_path, "n.csv", NODES))
    assert hosts[1] == HostState(
        "n1", "n1", 16000, 16000, 0, 0, tuple(GpuState(f"n1/gpu{i}", "V100M16", 0) for i in range(4))
    )
    jobs = load_jobs(write(tmp_path, "p.csv", PODS))
    assert jobs[1] == JobRequest("p1", 1, 500, gpu_models=frozenset({"T4", "P100"}), cpu_milli=2000)
    assert jobs[2].gpu_count == 0 and jobs[2].gpu_milli == 0


def test_five_column_pod_files_are_accepted(tmp_path: Path) -> None:
    jobs = load_jobs(write(tmp_path, "p.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1,1,250\n"))
    assert jobs == [JobRequest("a", 1, 250, cpu_milli=1000)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sn,cpu_milli,gpu\nn0,1,1\n", "missing column(s) memory_mib, model"),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,lots,1,1,T4\n", "n.csv:2: column cpu_milli must be an integer"),
        ("sn,cpu_milli,memory_mib,gpu,model\n", "no hosts"),
    ],
)
def test_bad_node_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hosts(write(tmp_path, "n.csv", text))


def test_bad_pod_row_names_the_line(tmp_path: Path) -> None:
    text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,1000\nb,1,1,2,500\n"
    with pytest.raises(TraceError, match=r"p.csv:3: .*fractional"):
        load_jobs(write(tmp_path, "p.csv", text))


def test_missing_file() -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_hosts(Path("/nonexistent/nodes.csv"))


def test_yaml_format(tmp_path: Path) -> None:
    hosts = load_hosts(
        write(
            tmp_path,
            "c.yaml",
            """
hosts:
  - name: big
    count: 2
    cpu_milli: 96000
    ram_mb: 524288
    gpus: {model: A100-80GB, count: 8, memory_mb: 81920}
  - name: mixed
    cpu_milli: 32000
    gpus:
      - {model: T4, count: 1, memory_mb: 16384}
      - {model: L4, count: 1}
""",
        )
    )
    assert [h.name for h in hosts] == ["big-0", "big-1", "mixed"]
    assert len(hosts[0].gpus) == 8 and hosts[0].gpus[0].memory_mib == 81920
    assert [g.model for g in hosts[2].gpus] == ["T4", "L4"]
    jobs = load_jobs(
        write(
            tmp_path,
            "j.yaml",
            """
jobs:
  - {name: train, gpus: 2, cpu_milli: 8000, gpu_models: [A100-80GB], count: 3}
  - {name: notebook, gpus: 1, gpu_milli: 250, memory_mb: 8192}
  - {name: etl, gpus: 0, cpu_milli: 4000, ram_mb: 2048}
""",
        )
    )
    assert [j.id for j in jobs] == ["train-0", "train-1", "train-2", "notebook", "etl"]
    assert jobs[3] == JobRequest("notebook", 1, 250, memory_min_mib=8192)
    assert jobs[4].gpu_count == 0 and jobs[4].cpu_milli == 4000


def test_yaml_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="unknown key"):
        load_jobs(write(tmp_path, "j.yaml", "jobs:\n  - {name: x, gpu: 1}\n"))


def test_arrivals_follow_the_documented_protocol() -> None:
    jobs = [JobRequest("a", 1, 1000), JobRequest("b", 1, 500), JobRequest("c", 0, 0, cpu_milli=1)]
    order = arrivals(jobs, capacity_milli=4000, inflation=1.3, seed=7)
    rng = random.Random(7)
    expected = list(jobs)
    demand, n = 1500, 0
    while True:
        pick = rng.choice(jobs)
        if demand + pick.total_gpu_milli > 5200:
            break
        n += 1
        expected.append(JobRequest(f"{pick.id}#{n}", pick.gpu_count, pick.gpu_milli, cpu_milli=pick.cpu_milli))
        demand += pick.total_gpu_milli
    rng.shuffle(expected)
    assert order == expected
    assert sum(j.total_gpu_milli for j in order) <= 5200


def test_run_on_a_tiny_trace(tmp_path: Path) -> None:
    hosts = load_hosts(write(tmp_path, "n.csv", NODES))
    jobs = load_jobs(write(tmp_path, "p.csv", PODS))
    for policy in ("default", "best-fit", "fgd", "random"):
        result = run(hosts, jobs, policy, seed=3)
        assert 0 < result.alloc_at_100 <= result.alloc_at_end <= 100
        assert result.failed >= 1  # 130% of the GPUs cannot all be placed
        assert 0 <= result.frag_at_90 <= 100
        assert result.decision_us_p50 <= result.decision_us_p99


def test_parse_seeds() -> None:
    assert parse_seeds("42-51") == list(range(42, 52))
    assert parse_seeds("1,3,5-7") == [1, 3, 5, 6, 7]
    for bad in ("x", "5-3", "1-", ""):
        with pytest.raises(ValueError, match="seed range"):
            parse_seeds(bad)


def test_simulate_runs_the_policy_as_production_bounds_it() -> None:
    from gpufleet.config import Settings
    from gpufleet.scheduler.allocator import DEFAULT_MAX_CANDIDATES, DEFAULT_SCAN_LIMIT, make_policy
    from gpufleet.scheduler.policies import BoundedScan
    from gpufleet.simulation import PolicyBounds

    settings = Settings()
    assert (settings.scheduler_max_candidates, settings.scheduler_scan_limit) == (
        DEFAULT_MAX_CANDIDATES,
        DEFAULT_SCAN_LIMIT,
    )
    assert PolicyBounds() == PolicyBounds(DEFAULT_MAX_CANDIDATES, DEFAULT_SCAN_LIMIT)
    policy = make_policy("default")
    assert isinstance(policy, BoundedScan)
    assert policy.scan_limit == DEFAULT_SCAN_LIMIT
    assert getattr(policy.inner, "max_candidates", None) == DEFAULT_MAX_CANDIDATES
