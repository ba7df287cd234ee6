"""GPU discovery behind one interface: NVML on real hosts, a simulated inventory elsewhere."""

from __future__ import annotations

from pathlib import Path

from gpufleet.agent.gpus.base import GpuBackend, GpuDiscoveryError, GpuInfo, GpuSample
from gpufleet.agent.gpus.nvml import NvmlBackend
from gpufleet.agent.gpus.simulated import (
    SimulatedBackend,
    SimulatedGpuSpec,
    SimulatedHost,
    load_simulated_hosts,
    parse_simulate_spec,
)

__all__ = [
    "GpuBackend",
    "GpuDiscoveryError",
    "GpuInfo",
    "GpuSample",
    "NvmlBackend",
    "SimulatedBackend",
    "SimulatedGpuSpec",
    "SimulatedHost",
    "load_simulated_hosts",
    "open_backend",
    "parse_simulate_spec",
]


def open_backend(simulate: str | None = None, *, host: str | None = None, seed: int = 0) -> GpuBackend:
    """The agent's backend from its ``--simulate`` option.

    None: NVML (GpuDiscoveryError with one clear line when there is no driver). A path to a
    ``.yaml``/``.yml`` file: the host named ``host`` in it (the first one when ``host`` is None).
    Anything else: a spec string such as ``8xH100-80GB`` for a host named ``host`` (default: this
    machine's hostname).
    """
    if simulate is None:
        return NvmlBackend()
    if simulate.endswith((".yaml", ".yml")) or Path(simulate).is_file():
        hosts = load_simulated_hosts(simulate)
        if host is None:
            return SimulatedBackend(hosts[0], seed=seed)
        for candidate in hosts:
            if candidate.name == host:
                return SimulatedBackend(candidate, seed=seed)
        raise ValueError(f"{simulate}: no host named {host!r} (hosts: {', '.join(h.name for h in hosts)})")
    return SimulatedBackend(simulate, seed=seed, host_name=host)
