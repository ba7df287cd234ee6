"""Facts about the host the agent runs on, sent with registration."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field

import psutil

import gpufleet
from gpufleet.agent.gpus.base import GpuBackend, GpuDiscoveryError
from gpufleet.agent.gpus.simulated import SimulatedBackend


@dataclass(frozen=True, slots=True)
class HostFacts:
    hostname: str
    os: str  # e.g. "Linux 6.1.0 (Debian GNU/Linux 12)"
    kernel: str  # full release, e.g. "6.1.0-18-amd64"
    arch: str  # e.g. "x86_64"
    cpu_cores: int  # logical
    ram_mb: int
    driver_version: str | None  # NVIDIA driver; None for simulated GPUs or no GPU
    cuda_version: str | None
    agent_version: str
    simulated: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def _os_description(system: str, kernel: str) -> str:
    version = kernel.split("-", 1)[0]
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return f"{system} {version}"
    distro = " ".join(p for p in (release.get("NAME"), release.get("VERSION_ID")) if p)
    distro = distro or release.get("PRETTY_NAME", "")
    return f"{system} {version} ({distro})" if distro else f"{system} {version}"


def collect_host_facts(backend: GpuBackend) -> HostFacts:
    """Read the host's facts; a simulated backend's host spec overrides name, CPUs, RAM and labels."""
    uname = platform.uname()
    hostname = socket.gethostname()
    cpu_cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    ram_mb = psutil.virtual_memory().total // (1024 * 1024)
    driver = cuda = None
    labels: dict[str, str] = {}
    if isinstance(backend, SimulatedBackend):
        sim = backend.host
        hostname = sim.name
        cpu_cores = sim.cpu_cores or cpu_cores
        ram_mb = sim.ram_mb or ram_mb
        labels = dict(sim.labels)
    elif not backend.simulated:
        try:
            gpus = backend.discover()
        except GpuDiscoveryError:
            gpus = []
        if gpus:
            driver, cuda = gpus[0].driver_version, gpus[0].cuda_version
    return HostFacts(
        hostname=hostname,
        os=_os_description(uname.system, uname.release),
        kernel=uname.release,
        arch=uname.machine,
        cpu_cores=cpu_cores,
        ram_mb=ram_mb,
        driver_version=driver,
        cuda_version=cuda,
        agent_version=gpufleet.__version__,
        simulated=backend.simulated,
        labels=labels,
    )
