"""Host facts from the machine, the GPU backend, and a simulated host's spec."""

from __future__ import annotations

import platform
from datetime import datetime

import gpufleet
from gpufleet.agent.gpus import GpuInfo, GpuSample, SimulatedBackend, SimulatedGpuSpec, SimulatedHost
from gpufleet.agent.hostinfo import collect_host_facts


class FakeRealBackend:
    """A non-simulated backend, as NVML would answer on a GPU host."""

    name = "fake-nvml"
    simulated = False

    def discover(self) -> list[GpuInfo]:
        return [GpuInfo("GPU-1", 0, "NVIDIA L4", 23034, "00000000:01:00.0", False, "550.54.15", "12.4", False)]

    def sample(self, now: datetime) -> list[GpuSample]:
        return []

    def close(self) -> None:
        pass


def test_facts_of_this_machine_with_a_non_simulated_gpu_backend() -> None:
    """The machine's own facts, with the driver and CUDA versions from a non-simulated backend
    (a stand-in answering as NVML does: no GPU is needed; scripts/gpu_check.sh runs on real ones)."""
    facts = collect_host_facts(FakeRealBackend())
    assert facts.hostname == platform.node()
    assert facts.os.startswith(f"{platform.system()} {platform.release().split('-')[0]}")
    assert facts.kernel == platform.release() and facts.arch == platform.machine()
    assert facts.cpu_cores >= 1 and facts.ram_mb > 100
    assert (facts.driver_version, facts.cuda_version) == ("550.54.15", "12.4")
    assert facts.agent_version == gpufleet.__version__ and facts.simulated is False


def test_simulated_host_spec_overrides_machine() -> None:
    host = SimulatedHost(
        "sim-7", (SimulatedGpuSpec("T4", 15360, 2),), cpu_cores=96, ram_mb=768 * 1024, labels={"zone": "b"}
    )
    facts = collect_host_facts(SimulatedBackend(host))
    assert (facts.hostname, facts.cpu_cores, facts.ram_mb, facts.labels) == ("sim-7", 96, 768 * 1024, {"zone": "b"})
    assert (facts.driver_version, facts.cuda_version, facts.simulated) == (None, None, True)


def test_simulated_spec_without_host_facts_uses_machine() -> None:
    facts = collect_host_facts(SimulatedBackend("1xL4", host_name="dev"))
    assert facts.hostname == "dev" and facts.cpu_cores >= 1 and facts.ram_mb > 100
