"""The simulated inventory: spec grammar, YAML hosts, deterministic metrics, fault injection."""

from __future__ import annotations

import re
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpufleet.agent.gpus import (
    SimulatedBackend,
    SimulatedGpuSpec,
    load_simulated_hosts,
    open_backend,
    parse_simulate_spec,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8xH100-80GB", [SimulatedGpuSpec("H100-80GB", 81559, 8)]),
        ("4xA100-80GB", [SimulatedGpuSpec("A100-80GB", 81920, 4)]),
        ("2xA100-40GB,1xT4-16GB", [SimulatedGpuSpec("A100-40GB", 40960, 2), SimulatedGpuSpec("T4", 15360, 1)]),
        ("1xL4", [SimulatedGpuSpec("L4", 23034, 1)]),
        (" 2 x h100 ", [SimulatedGpuSpec("H100-80GB", 81559, 2)]),
        ("1xMYGPU-24GB", [SimulatedGpuSpec("MYGPU-24GB", 24576, 1)]),
        ("1xRTX4090,1xA10G", [SimulatedGpuSpec("RTX4090", 24564, 1), SimulatedGpuSpec("A10G", 23028, 1)]),
    ],
)
def test_parse_spec(spec: str, expected: list[SimulatedGpuSpec]) -> None:
    assert parse_simulate_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty GPU spec: expected COUNTxMODEL"),
        ("8H100", "bad GPU spec part '8H100' in '8H100': expected COUNTxMODEL"),
        ("0xH100", "'0xH100'.*count must be at least 1"),
        ("2xA100-40GB,,1xT4", "bad GPU spec part '' in"),
        ("xH100", "bad GPU spec part 'xH100'"),
        ("2xMYSTERY", "unknown GPU model 'MYSTERY' in '2xMYSTERY': give its memory as MYSTERY-NNGB"),
        ("1xH100-0GB", "memory must be at least 1GB"),
    ],
)
def test_parse_spec_errors_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_simulate_spec(spec)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return path


def test_load_yaml_hosts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
hosts:
  - name: sim-1
    gpus: [{model: A100-80GB, count: 4}, {model: MYGPU, memory_mb: 20000}]
    cpu_cores: 64
    ram_gb: 512
    labels: {zone: a}
  - name: sim-2
    gpus: "2xT4-16GB"
""",
    )
    one, two = load_simulated_hosts(path)
    assert one.name == "sim-1" and (one.cpu_cores, one.ram_mb, one.labels) == (64, 512 * 1024, {"zone": "a"})
    assert one.gpus == (SimulatedGpuSpec("A100-80GB", 81920, 4), SimulatedGpuSpec("MYGPU", 20000, 1))
    assert two.gpus == (SimulatedGpuSpec("T4", 15360, 2),) and two.cpu_cores is None and two.labels == {}
    backend = open_backend(str(path), host="sim-2", seed=3)
    assert isinstance(backend, SimulatedBackend) and backend.host.name == "sim-2"
    assert [g.model for g in backend.discover()] == ["T4", "T4"]
    assert isinstance(open_backend(str(path)), SimulatedBackend)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: []", "'hosts' must be a non-empty list"),
        ("hosts: [{name: a, gpus: [{model: T4}], gpu: 1}]", r"hosts\[0\]: unknown keys \['gpu'\]"),
        ("hosts: [{gpus: '1xT4'}]", r"missing keys \['name'\]"),
        ("hosts: [{name: a, gpus: [{model: T4, count: 0}]}]", r"hosts\[0\] \(a\)\.gpus\[0\]\.count must be a positive"),
        ("hosts: [{name: a, gpus: [{model: WHAT}]}]", "unknown GPU model 'WHAT'"),
        ("hosts: [{name: a, gpus: '1xT4'}, {name: a, gpus: '1xL4'}]", r"duplicate host names \['a'\]"),
        ("hosts: [{name: a, gpus: '1xT4'", "not valid YAML"),
    ],
)
def test_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_simulated_hosts(write(tmp_path, text))


def test_open_backend_unknown_host(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts: [{name: a, gpus: '1xT4'}]")
    with pytest.raises(ValueError, match="no host named 'b'"):
        open_backend(str(path), host="b")


def test_inventory_is_deterministic_and_marked_simulated() -> None:
    a = SimulatedBackend("2xA100-40GB,1xT4-16GB", seed=7, host_name="h")
    b = SimulatedBackend("2xA100-40GB,1xT4-16GB", seed=7, host_name="h")
    gpus = a.discover()
    assert gpus == b.discover()
    assert [g.index for g in gpus] == [0, 1, 2] and len({g.uuid for g in gpus}) == 3
    assert all(UUID_RE.match(g.uuid) and g.simulated for g in gpus)
    assert (a.name, a.simulated) == ("simulated", True)
    other_seed = SimulatedBackend("2xA100-40GB,1xT4-16GB", seed=8, host_name="h").discover()
    other_host = SimulatedBackend("2xA100-40GB,1xT4-16GB", seed=7, host_name="g").discover()
    assert not {g.uuid for g in gpus} & {g.uuid for g in other_seed + other_host}


def test_samples_depend_only_on_seed_uuid_and_time() -> None:
    a = SimulatedBackend("4xH100-80GB", seed=1, host_name="h")
    b = SimulatedBackend("4xH100-80GB", seed=1, host_name="h")
    for backend in (a, b):
        backend.set_busy(backend.discover()[0].uuid)
    t1, t2 = T0, T0 + timedelta(seconds=10)
    first = a.sample(t1), a.sample(t2)
    assert (b.sample(t2), b.sample(t1)) == first[::-1]  # call order does not matter
    assert all(s.ts == t1 for s in first[0])
    c = SimulatedBackend("4xH100-80GB", seed=2, host_name="h")
    c.set_busy(c.discover()[0].uuid)
    assert (
        c.sample(t1)[0].utilization_pct != first[0][0].utilization_pct or c.sample(t1)[0].power_w != first[0][0].power_w
    )


def test_busy_gpu_shows_load_and_temperature_follows_power() -> None:
    backend = SimulatedBackend("2xH100-80GB", seed=0, host_name="h")
    busy = backend.discover()[0].uuid
    backend.set_busy(busy)
    samples = [backend.sample(T0 + timedelta(seconds=15 * i)) for i in range(80)]
    b = [s[0] for s in samples]
    i = [s[1] for s in samples]
    assert min(s.utilization_pct or 0 for s in b) > 40 and max(s.utilization_pct or 0 for s in i) < 5
    assert min(s.memory_used_mb for s in b) > 81559 * 0.2 > max(s.memory_used_mb for s in i)
    assert all(s.process_count == 1 for s in b) and all(s.process_count == 0 for s in i)
    assert all(0 <= (s.utilization_pct or 0) <= 100 and 0 <= s.memory_used_mb <= 81559 for s in b + i)
    power = [s.power_w or 0.0 for s in b + i]
    temperature = [float(s.temperature_c or 0) for s in b + i]
    assert statistics.correlation(power, temperature) > 0.9
    assert min(temperature) >= 30 and max(temperature) <= 85 and max(power) <= 700
    backend.set_busy(busy, False)
    assert backend.sample(T0)[0].process_count == 0


def test_fault_injection() -> None:
    backend = SimulatedBackend("2xA100-80GB", seed=0, host_name="h")
    gpu = backend.discover()[0].uuid
    clean = backend.sample(T0)[0]
    assert (clean.ecc_uncorrected, clean.xid_errors) == (0, 0)
    backend.inject(gpu, ecc_uncorrected=2, xid=79, temperature_c=97, foreign_memory_mb=30000, foreign_processes=2)
    backend.inject(gpu, ecc_uncorrected=1, xid=48)
    s, o = backend.sample(T0)
    assert (s.ecc_uncorrected, s.xid_errors, s.temperature_c, s.process_count) == (3, 2, 97, 2)
    assert s.memory_used_mb >= 30000 > clean.memory_used_mb
    assert backend.xid_events(gpu) == [79, 48]
    assert o == backend.sample(T0)[1] and (o.ecc_uncorrected, o.xid_errors) == (0, 0)
    backend.clear_faults(gpu)
    assert backend.sample(T0)[0] == clean
    with pytest.raises(ValueError, match="unknown simulated GPU 'GPU-nope'"):
        backend.inject("GPU-nope", xid=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        backend.sample(datetime(2025, 1, 1))
