"""NvmlBackend against a stub `pynvml` module: two GPUs, one without MIG, power or ECC support."""

from __future__ import annotations

import ctypes.util
import sys
import types
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gpufleet.agent.gpus import GpuDiscoveryError, NvmlBackend, open_backend

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MIB = 1024 * 1024


class NVMLError(Exception):
    def __init__(self, message: str = "NVML error") -> None:
        super().__init__(message)


def _error(name: str, message: str) -> type[NVMLError]:
    return type(name, (NVMLError,), {"__init__": lambda self: NVMLError.__init__(self, message)})


@dataclass
class FakeGpu:
    uuid: str
    name: str
    total_mb: int
    used_mb: int
    bus_id: str
    mig: list[int] | None  # None: NotSupported
    power_mw: int | None
    ecc: int | None
    util: int | None
    temp: int
    compute_pids: list[int] = field(default_factory=list)
    graphics_pids: list[int] = field(default_factory=list)
    events: bool = True


@dataclass
class Calls:
    init: int = 0
    shutdown: int = 0
    event_set_free: int = 0
    wait_timeouts: list[int] = field(default_factory=list)


def make_stub(gpus: list[FakeGpu], *, init_error: str | None = None) -> tuple[types.ModuleType, Calls]:
    m = types.ModuleType("pynvml")
    calls = Calls()
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    errors = {
        "NotSupported": "Not Supported",
        "NoPermission": "Insufficient Permissions",
        "FunctionNotFound": "Function Not Found",
        "LibraryNotFound": "NVML Shared Library Not Found",
        "DriverNotLoaded": "Driver Not Loaded",
        "Timeout": "Timeout",
        "GpuIsLost": "GPU is lost",
        "LibRmVersionMismatch": "RM has detected an NVML/RM version mismatch.",
    }
    for name, message in errors.items():
        setattr(m, f"NVMLError_{name}", _error(f"NVMLError_{name}", message))
    ns: Any = m
    ns.NVML_TEMPERATURE_GPU = 0
    ns.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    ns.NVML_VOLATILE_ECC = 0
    ns.NVML_DEVICE_MIG_ENABLE = 1
    ns.nvmlEventTypeXidCriticalError = 8
    pending_events: list[tuple[FakeGpu, int]] = []
    ns.pending_events = pending_events

    def init() -> None:
        calls.init += 1
        if init_error is not None:
            raise getattr(ns, init_error)()

    def unsupported_if_none(value: Any) -> Any:
        if value is None:
            raise ns.NVMLError_NotSupported()
        return value

    def wait(event_set: object, timeout_ms: int) -> Any:
        calls.wait_timeouts.append(timeout_ms)
        if not pending_events:
            raise ns.NVMLError_Timeout()
        gpu, xid = pending_events.pop(0)
        return types.SimpleNamespace(device=gpu, eventType=8, eventData=xid)

    def register(handle: FakeGpu, types_: int, event_set: object) -> None:
        assert types_ == 8
        if not handle.events:
            raise ns.NVMLError_NotSupported()

    def shutdown() -> None:
        calls.shutdown += 1

    def free(event_set: object) -> None:
        calls.event_set_free += 1

    ns.nvmlInit = init
    ns.nvmlShutdown = shutdown
    ns.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    ns.nvmlSystemGetCudaDriverVersion = lambda: 12040
    ns.nvmlDeviceGetCount = lambda: len(gpus)
    ns.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    ns.nvmlDeviceGetUUID = lambda h: h.uuid
    ns.nvmlDeviceGetName = lambda h: h.name
    ns.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=h.total_mb * MIB, used=h.used_mb * MIB, free=(h.total_mb - h.used_mb) * MIB
    )
    ns.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=h.bus_id)
    ns.nvmlDeviceGetMigMode = lambda h: unsupported_if_none(h.mig)
    ns.nvmlDeviceGetPowerUsage = lambda h: unsupported_if_none(h.power_mw)
    ns.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: unsupported_if_none(
        h.ecc if (kind, counter) == (1, 0) else None
    )
    ns.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=unsupported_if_none(h.util), memory=0)
    ns.nvmlDeviceGetTemperature = lambda h, sensor: h.temp
    ns.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=p) for p in h.compute_pids]
    ns.nvmlDeviceGetGraphicsRunningProcesses = lambda h: [types.SimpleNamespace(pid=p) for p in h.graphics_pids]
    ns.nvmlEventSetCreate = lambda: object()
    ns.nvmlDeviceRegisterEvents = register
    ns.nvmlEventSetWait_v2 = wait
    ns.nvmlEventSetFree = free
    return m, calls


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            "GPU-11111111-2222-3333-4444-555555555555",
            "NVIDIA H100 80GB HBM3",
            81559,
            1024,
            "00000000:18:00.0",
            mig=[0, 0],
            power_mw=312_456,
            ecc=0,
            util=87,
            temp=64,
            compute_pids=[100, 101],
            graphics_pids=[101],
        ),
        FakeGpu(
            "GPU-66666666-7777-8888-9999-000000000000",
            "NVIDIA GeForce RTX 4090",
            24564,
            5,
            "00000000:3B:00.0",
            mig=None,
            power_mw=None,
            ecc=None,
            util=0,
            temp=35,
            events=False,
        ),
    ]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, Calls, list[FakeGpu]]:
    gpus = two_gpus()
    module, calls = make_stub(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module, calls, gpus


def test_discover_reports_every_field(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    backend = NvmlBackend()
    h100, rtx = backend.discover()
    assert (backend.name, backend.simulated) == ("nvml", False)
    assert h100.uuid == "GPU-11111111-2222-3333-4444-555555555555"
    assert (h100.index, h100.model, h100.memory_total_mb) == (0, "NVIDIA H100 80GB HBM3", 81559)
    assert (h100.pci_bus_id, h100.mig_mode) == ("00000000:18:00.0", False)
    assert (h100.driver_version, h100.cuda_version, h100.simulated) == ("550.54.15", "12.4", False)
    assert (rtx.index, rtx.model, rtx.mig_mode) == (1, "NVIDIA GeForce RTX 4090", None)
    backend.close()


def test_sample_guards_unsupported_fields(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    backend = NvmlBackend()
    h100, rtx = backend.sample(NOW)
    assert h100.ts == NOW and h100.uuid.startswith("GPU-1111")
    assert (h100.utilization_pct, h100.memory_used_mb, h100.temperature_c) == (87, 1024, 64)
    assert (h100.power_w, h100.ecc_uncorrected, h100.xid_errors) == (312.5, 0, 0)
    assert h100.process_count == 2  # pid 101 is in both lists
    assert (rtx.power_w, rtx.ecc_uncorrected, rtx.xid_errors, rtx.process_count) == (None, None, None, 0)
    backend.close()


def test_mig_enabled_gpu_without_utilization(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    _, _, gpus = stub
    gpus[0].mig, gpus[0].util = [1, 1], None
    backend = NvmlBackend()
    assert backend.discover()[0].mig_mode is True
    assert backend.sample(NOW)[0].utilization_pct is None
    backend.close()


def test_xid_events_are_polled_without_blocking(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    module, calls, gpus = stub
    backend = NvmlBackend()
    assert backend.sample(NOW)[0].xid_errors == 0
    module.pending_events += [(gpus[0], 79), (gpus[0], 48)]  # type: ignore[attr-defined]
    assert backend.sample(NOW)[0].xid_errors == 2
    assert backend.sample(NOW)[0].xid_errors == 2  # a count since discovery, not per sample
    assert set(calls.wait_timeouts) == {0}
    backend.close()


def test_close_shuts_nvml_down_once(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    _, calls, _ = stub
    backend = NvmlBackend()
    backend.discover()
    backend.close()
    backend.close()
    assert (calls.init, calls.shutdown, calls.event_set_free) == (1, 1, 1)
    with pytest.raises(GpuDiscoveryError, match="closed"):
        backend.sample(NOW)


def test_failed_required_query_names_it(stub: tuple[types.ModuleType, Calls, list[FakeGpu]]) -> None:
    module, _, _ = stub
    backend = NvmlBackend()
    backend.discover()

    def lost(handle: object) -> None:
        raise module.NVMLError_GpuIsLost()

    module.nvmlDeviceGetMemoryInfo = lost  # type: ignore[attr-defined]
    with pytest.raises(GpuDiscoveryError, match=r"memory of GPU 0.*GPU is lost"):
        backend.sample(NOW)
    backend.close()


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        ("NVMLError_LibraryNotFound", "NVML Shared Library Not Found"),
        ("NVMLError_DriverNotLoaded", "Driver Not Loaded"),
    ],
)
def test_no_driver_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch, error: str, detail: str) -> None:
    module, _ = make_stub([], init_error=error)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(GpuDiscoveryError) as info:
        open_backend(None)
    assert str(info.value) == (
        f"NVML is not available on this host (no NVIDIA driver found: {detail}). "
        "Use --simulate SPEC to run with a simulated inventory."
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_other_init_failure_is_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = make_stub([], init_error="NVMLError_LibRmVersionMismatch")
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(GpuDiscoveryError, match=r"^NVML could not be initialised .*version mismatch.*--simulate"):
        NvmlBackend()


def test_missing_package_is_a_discovery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(GpuDiscoveryError, match=r"nvidia-ml-py package cannot be imported.*--simulate"):
        NvmlBackend()


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this host has an NVIDIA driver")
def test_real_pynvml_without_driver() -> None:
    with pytest.raises(GpuDiscoveryError, match=r"^NVML is not available on this host \(no NVIDIA driver found"):
        NvmlBackend()
