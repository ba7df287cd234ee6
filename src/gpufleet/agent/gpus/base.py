"""What every GPU discovery backend reports: static facts per GPU and periodic samples.

The backend takes the sample time as an argument, so the caller owns the clock and tests are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class GpuDiscoveryError(Exception):
    """GPUs cannot be discovered on this host; the message is one line, meant for the operator."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """Static facts about one GPU, as discovered at agent start."""

    uuid: str  # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as NVML reports it
    index: int  # NVML index (PCI bus order); CUDA uses it with CUDA_DEVICE_ORDER=PCI_BUS_ID
    model: str  # NVML's name, e.g. "NVIDIA H100 80GB HBM3"; simulated: "H100-80GB"
    memory_total_mb: int  # MiB
    pci_bus_id: str
    mig_mode: bool | None  # None: the GPU does not support MIG
    driver_version: str
    cuda_version: str | None  # highest CUDA version the driver supports, e.g. "12.4"
    simulated: bool


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of a GPU's health and load. None means the GPU does not report that field."""

    uuid: str
    ts: datetime  # timezone-aware UTC, given by the caller
    utilization_pct: int | None  # 0..100; NVML does not report it while MIG is enabled
    memory_used_mb: int
    temperature_c: int | None
    power_w: float | None
    ecc_uncorrected: int | None  # volatile (since driver load) uncorrected ECC error count
    xid_errors: int | None  # XID critical-error events seen since discovery
    process_count: int  # distinct processes holding a compute or graphics context


class GpuBackend(Protocol):
    """A source of GPU inventory and metrics: NVML on real hosts, a simulation elsewhere."""

    name: str
    simulated: bool

    def discover(self) -> list[GpuInfo]: ...

    def sample(self, now: datetime) -> list[GpuSample]: ...

    def close(self) -> None: ...
