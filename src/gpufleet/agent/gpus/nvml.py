"""GPU discovery and sampling through NVML (the `pynvml` module of the nvidia-ml-py package).

NVML is initialised once per backend; handles are taken by index at the first discovery. Fields a
GPU does not support (power on some boards, ECC on consumer cards, MIG before Ampere, utilization
while MIG is enabled) come back as None instead of failing the whole sample. XID critical errors
arrive through NVML's event API, which is polled without blocking at every sample.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Any, TypeVar

from gpufleet.agent.gpus.base import GpuDiscoveryError, GpuInfo, GpuSample

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_MAX_EVENTS_PER_SAMPLE = 1000  # a storm of XIDs must not stall a heartbeat
_SIMULATE_HINT = "Use --simulate SPEC to run with a simulated inventory."

T = TypeVar("T")


def _text(value: Any) -> str:
    """pynvml returns str in recent versions and bytes in older ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _load_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise GpuDiscoveryError(
            f"NVML is not available on this host (the nvidia-ml-py package cannot be imported: {exc}). {_SIMULATE_HINT}"
        ) from None


class NvmlBackend:
    """Real GPUs through NVML. Construction initialises NVML or raises GpuDiscoveryError."""

    name = "nvml"
    simulated = False

    def __init__(self) -> None:
        self._nvml = _load_pynvml()
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuDiscoveryError(self._init_message(exc)) from None
        self._open = True
        self._handles: list[Any] | None = None
        self._uuids: list[str] = []
        self._xid_counts: dict[str, int | None] = {}
        self._event_set: Any = None

    def _init_message(self, exc: Exception) -> str:
        nvml = self._nvml
        missing = (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded)
        if isinstance(exc, missing):
            return f"NVML is not available on this host (no NVIDIA driver found: {exc}). {_SIMULATE_HINT}"
        return f"NVML could not be initialised on this host ({exc}). {_SIMULATE_HINT}"

    # -- helpers -------------------------------------------------------------------------------

    def _optional(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Call an NVML query whose answer some GPUs do not have."""
        nvml = self._nvml
        try:
            return fn(*args)
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_NoPermission, nvml.NVMLError_FunctionNotFound):
            return None

    def _required(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            raise GpuDiscoveryError(f"NVML query {what} failed: {exc}") from None

    def _ensure_handles(self) -> list[Any]:
        if not self._open:
            raise GpuDiscoveryError("NVML backend is closed")
        if self._handles is None:
            nvml = self._nvml
            count = self._required("device count", nvml.nvmlDeviceGetCount)
            handles = [self._required(f"handle of GPU {i}", nvml.nvmlDeviceGetHandleByIndex, i) for i in range(count)]
            self._uuids = [_text(self._required("UUID", nvml.nvmlDeviceGetUUID, h)) for h in handles]
            self._handles = handles
            self._register_xid_events()
        return self._handles

    def _register_xid_events(self) -> None:
        nvml = self._nvml
        assert self._handles is not None
        self._xid_counts = dict.fromkeys(self._uuids)
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.info("NVML events unavailable, XID errors will not be counted: %s", exc)
            return
        for uuid, handle in zip(self._uuids, self._handles, strict=True):
            try:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
            except nvml.NVMLError as exc:
                log.info("GPU %s does not report XID events: %s", uuid, exc)
                continue
            self._xid_counts[uuid] = 0

    def _poll_xid_events(self) -> None:
        nvml = self._nvml
        if self._event_set is None:
            return
        for _ in range(_MAX_EVENTS_PER_SAMPLE):
            try:
                data = nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except nvml.NVMLError_Timeout:
                return
            except nvml.NVMLError as exc:
                log.warning("polling NVML events failed: %s", exc)
                return
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
            except nvml.NVMLError:
                continue
            if self._xid_counts.get(uuid) is not None:
                self._xid_counts[uuid] = (self._xid_counts[uuid] or 0) + 1
                log.warning("GPU %s reported XID %s", uuid, getattr(data, "eventData", "?"))

    # -- GpuBackend ----------------------------------------------------------------------------

    def discover(self) -> list[GpuInfo]:
        nvml = self._nvml
        handles = self._ensure_handles()
        driver = _text(self._required("driver version", nvml.nvmlSystemGetDriverVersion))
        cuda_raw = self._optional(nvml.nvmlSystemGetCudaDriverVersion)
        cuda = f"{cuda_raw // 1000}.{cuda_raw % 1000 // 10}" if cuda_raw else None
        gpus = []
        for index, (uuid, handle) in enumerate(zip(self._uuids, handles, strict=True)):
            memory = self._required(f"memory of GPU {index}", nvml.nvmlDeviceGetMemoryInfo, handle)
            pci = self._required(f"PCI info of GPU {index}", nvml.nvmlDeviceGetPciInfo, handle)
            mig = self._optional(nvml.nvmlDeviceGetMigMode, handle)
            gpus.append(
                GpuInfo(
                    uuid=uuid,
                    index=index,
                    model=_text(self._required(f"name of GPU {index}", nvml.nvmlDeviceGetName, handle)),
                    memory_total_mb=int(memory.total) // _MIB,
                    pci_bus_id=_text(pci.busId),
                    mig_mode=None if mig is None else mig[0] == nvml.NVML_DEVICE_MIG_ENABLE,
                    driver_version=driver,
                    cuda_version=cuda,
                    simulated=False,
                )
            )
        return gpus

    def sample(self, now: datetime) -> list[GpuSample]:
        nvml = self._nvml
        handles = self._ensure_handles()
        self._poll_xid_events()
        samples = []
        for index, (uuid, handle) in enumerate(zip(self._uuids, handles, strict=True)):
            memory = self._required(f"memory of GPU {index}", nvml.nvmlDeviceGetMemoryInfo, handle)
            util = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
            pids: set[int] = set()
            for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
                pids.update(p.pid for p in self._optional(query, handle) or ())
            samples.append(
                GpuSample(
                    uuid=uuid,
                    ts=now,
                    utilization_pct=None if util is None else int(util.gpu),
                    memory_used_mb=int(memory.used) // _MIB,
                    temperature_c=self._optional(
                        nvml.nvmlDeviceGetTemperature,
                        handle,
                        nvml.NVML_TEMPERATURE_GPU,
                    ),
                    power_w=None if power_mw is None else round(power_mw / 1000.0, 1),
                    ecc_uncorrected=self._optional(
                        nvml.nvmlDeviceGetTotalEccErrors,
                        handle,
                        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                        nvml.NVML_VOLATILE_ECC,
                    ),
                    xid_errors=self._xid_counts.get(uuid),
                    process_count=len(pids),
                )
            )
        return samples

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        nvml = self._nvml
        if self._event_set is not None:
            try:
                nvml.nvmlEventSetFree(self._event_set)
            except nvml.NVMLError as exc:
                log.debug("freeing the NVML event set failed: %s", exc)
            self._event_set = None
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)
