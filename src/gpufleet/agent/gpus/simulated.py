"""A simulated GPU inventory, for development, demos and tests on machines without NVIDIA GPUs.

Two ways to describe it:

* a spec string, ``COUNTxMODEL[-NNGB]`` groups separated by commas: ``8xH100-80GB``,
  ``2xA100-40GB,1xT4-16GB``, ``1xL4``. Known models take their memory (MiB, as NVML reports it) from
  ``KNOWN_MODELS``; for other models the ``-NNGB`` suffix is required and sets the memory.
* a YAML file of hosts, loaded with ``load_simulated_hosts``::

      hosts:
        - name: sim-1               # required, unique; becomes the host name
          gpus:                     # a list of groups, or a spec string such as "4xA100-80GB"
            - {model: A100-80GB, count: 4}
            - {model: MYGPU, count: 1, memory_mb: 20000}   # memory_mb overrides the table
          cpu_cores: 64             # optional; default: this machine's
          ram_gb: 512               # optional (or ram_mb); default: this machine's
          labels: {zone: a}         # optional, string values

Every GPU gets a UUID derived from (seed, host name, index), so a restarted simulated agent keeps
its identity. Samples are a smooth function of (seed, uuid, timestamp) plus noise from an RNG seeded
by the same triple: the same inputs give the same sample whatever the call order. ``set_busy`` makes
a GPU show the load of a running job; ``inject`` adds faults (ECC errors, XIDs, heat, memory or
processes that no job of ours owns).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from gpufleet.agent.gpus.base import GpuInfo, GpuSample

# canonical name -> (memory MiB as NVML reports it, idle W, board power limit W)
KNOWN_MODELS: dict[str, tuple[int, float, float]] = {
    "H200-141GB": (143771, 75.0, 700.0),
    "H100-80GB": (81559, 70.0, 700.0),
    "A100-80GB": (81920, 50.0, 400.0),
    "A100-40GB": (40960, 45.0, 400.0),
    "L40S": (46068, 35.0, 350.0),
    "L4": (23034, 16.0, 72.0),
    "A10G": (23028, 25.0, 300.0),
    "A10": (23028, 25.0, 150.0),
    "T4": (15360, 10.0, 70.0),
    "V100-32GB": (32768, 40.0, 300.0),
    "V100-16GB": (16384, 40.0, 300.0),
    "RTX4090": (24564, 20.0, 450.0),
}
_ALIASES = {
    "H200": "H200-141GB",
    "H100": "H100-80GB",
    "A100": "A100-80GB",
    "V100": "V100-32GB",
    "T4-16GB": "T4",
    "L4-24GB": "L4",
    "A10G-24GB": "A10G",
    "A10-24GB": "A10",
    "L40S-48GB": "L40S",
    "RTX4090-24GB": "RTX4090",
}
_DEFAULT_POWER = (30.0, 300.0)
_SPEC_FORM = "COUNTxMODEL[-NNGB], groups separated by commas, e.g. 8xH100-80GB or 2xA100-40GB,1xT4-16GB"
_PART_RE = re.compile(r"^(\d+)\s*[xX]\s*([A-Za-z0-9][A-Za-z0-9_.\-]*?)(?:-(\d+)GB)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SimulatedGpuSpec:
    model: str
    memory_mb: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class SimulatedHost:
    name: str
    gpus: tuple[SimulatedGpuSpec, ...]
    cpu_cores: int | None = None
    ram_mb: int | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _canonical(name: str) -> str | None:
    key = name.upper()
    key = _ALIASES.get(key, key)
    return key if key in KNOWN_MODELS else None


def _resolve(base: str, memory_gb: int | None, memory_mb: int | None, where: str) -> tuple[str, int]:
    full = f"{base}-{memory_gb}GB" if memory_gb is not None else base
    known = _canonical(full)
    if memory_mb is not None:
        return known or full, memory_mb
    if known is not None:
        return known, KNOWN_MODELS[known][0]
    if memory_gb is not None:
        return full, memory_gb * 1024
    raise ValueError(
        f"unknown GPU model {base!r} in {where}: give its memory as {base}-NNGB "
        f"(known models: {', '.join(sorted(KNOWN_MODELS))})"
    )


def parse_simulate_spec(spec: str) -> list[SimulatedGpuSpec]:
    """Parse ``8xH100-80GB`` / ``2xA100-40GB,1xT4-16GB``; ValueError names the bad part."""
    if not spec.strip():
        raise ValueError(f"empty GPU spec: expected {_SPEC_FORM}")
    groups = []
    for raw in spec.split(","):
        part = raw.strip()
        match = _PART_RE.match(part)
        if match is None:
            raise ValueError(f"bad GPU spec part {part!r} in {spec!r}: expected {_SPEC_FORM}")
        count, base, gb = int(match[1]), match[2], match[3]
        if count < 1:
            raise ValueError(f"bad GPU spec part {part!r} in {spec!r}: the count must be at least 1")
        if gb is not None and int(gb) < 1:
            raise ValueError(f"bad GPU spec part {part!r} in {spec!r}: the memory must be at least 1GB")
        model, memory = _resolve(base, None if gb is None else int(gb), None, f"{part!r}")
        groups.append(SimulatedGpuSpec(model=model, memory_mb=memory, count=count))
    return groups


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_keys(obj: Any, allowed: set[str], required: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a mapping, got {type(obj).__name__}")
    unknown = set(obj) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(map(str, unknown))} (allowed: {sorted(allowed)})")
    missing = required - set(obj)
    if missing:
        raise ValueError(f"{what}: missing keys {sorted(missing)}")
    return obj


def _host_from_yaml(raw: Any, where: str) -> SimulatedHost:
    host = _check_keys(raw, {"name", "gpus", "cpu_cores", "ram_gb", "ram_mb", "labels"}, {"name", "gpus"}, where)
    name = str(host["name"])
    where = f"{where} ({name})"
    gpus_raw = host["gpus"]
    if isinstance(gpus_raw, str):
        gpus = parse_simulate_spec(gpus_raw)
    elif isinstance(gpus_raw, list):
        gpus = []
        for i, g in enumerate(gpus_raw):
            gw = f"{where}.gpus[{i}]"
            group = _check_keys(g, {"model", "count", "memory_mb"}, {"model"}, gw)
            mem = group.get("memory_mb")
            mem = None if mem is None else _positive_int(mem, f"{gw}.memory_mb")
            model_raw = str(group["model"])
            m = re.fullmatch(r"(.+?)-(\d+)GB", model_raw, re.IGNORECASE)
            base, gb = (m[1], int(m[2])) if m else (model_raw, None)
            model, memory = _resolve(base, gb, mem, gw)
            count = _positive_int(group.get("count", 1), f"{gw}.count")
            gpus.append(SimulatedGpuSpec(model=model, memory_mb=memory, count=count))
    else:
        raise ValueError(f"{where}.gpus must be a list of groups or a spec string like '4xA100-80GB'")
    ram_mb = None
    if host.get("ram_mb") is not None:
        ram_mb = _positive_int(host["ram_mb"], f"{where}.ram_mb")
    elif host.get("ram_gb") is not None:
        ram_mb = _positive_int(host["ram_gb"], f"{where}.ram_gb") * 1024
    cores = None if host.get("cpu_cores") is None else _positive_int(host["cpu_cores"], f"{where}.cpu_cores")
    labels = host.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError(f"{where}.labels must be a mapping of strings")
    return SimulatedHost(
        name=name, gpus=tuple(gpus), cpu_cores=cores, ram_mb=ram_mb, labels={str(k): str(v) for k, v in labels.items()}
    )


def load_simulated_hosts(path: str | Path) -> list[SimulatedHost]:
    """Read a YAML file of simulated hosts (format in this module's docstring)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    doc = _check_keys(doc, {"hosts"}, {"hosts"}, str(path))
    if not isinstance(doc["hosts"], list) or not doc["hosts"]:
        raise ValueError(f"{path}: 'hosts' must be a non-empty list")
    hosts = [_host_from_yaml(h, f"{path}: hosts[{i}]") for i, h in enumerate(doc["hosts"])]
    names = [h.name for h in hosts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate host names {dupes}")
    return hosts


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).digest()


def simulated_uuid(seed: int, host: str, index: int) -> str:
    h = _digest("gpu", seed, host, index).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass
class _Faults:
    ecc_uncorrected: int = 0
    xids: list[int] = field(default_factory=list)
    temperature_c: int | None = None
    foreign_memory_mb: int = 0
    foreign_processes: int = 0


class SimulatedBackend:
    """GPUs that exist only in memory; every GpuInfo says ``simulated=True``."""

    name = "simulated"
    simulated = True

    def __init__(
        self,
        hosts_or_spec: str | SimulatedHost | Sequence[SimulatedGpuSpec],
        *,
        seed: int = 0,
        host_name: str | None = None,
    ) -> None:
        if isinstance(hosts_or_spec, SimulatedHost):
            host = hosts_or_spec
        else:
            groups = parse_simulate_spec(hosts_or_spec) if isinstance(hosts_or_spec, str) else list(hosts_or_spec)
            host = SimulatedHost(name=host_name or socket.gethostname(), gpus=tuple(groups))
        self.host = host
        self.seed = seed
        self._gpus: list[GpuInfo] = []
        self._power: dict[str, tuple[float, float]] = {}
        for group in host.gpus:
            base = group.model.split("-")[0]
            known = _canonical(group.model) or _canonical(base)
            power = KNOWN_MODELS[known][1:] if known else _DEFAULT_POWER
            for _ in range(group.count):
                index = len(self._gpus)
                uuid = simulated_uuid(seed, host.name, index)
                self._power[uuid] = power
                self._gpus.append(
                    GpuInfo(
                        uuid=uuid,
                        index=index,
                        model=group.model,
                        memory_total_mb=group.memory_mb,
                        pci_bus_id=f"00000000:{(0x18 + 0x10 * index) % 0x100:02X}:00.0",
                        mig_mode=None,
                        driver_version="simulated",
                        cuda_version=None,
                        simulated=True,
                    )
                )
        self._busy: set[str] = set()
        self._faults: dict[str, _Faults] = {g.uuid: _Faults() for g in self._gpus}

    def _check(self, uuid: str) -> _Faults:
        try:
            return self._faults[uuid]
        except KeyError:
            raise ValueError(f"unknown simulated GPU {uuid!r} on host {self.host.name!r}") from None

    def set_busy(self, uuid: str, busy: bool = True) -> None:
        """Show (or stop showing) the load of a job running on this GPU."""
        self._check(uuid)
        (self._busy.add if busy else self._busy.discard)(uuid)

    def inject(
        self,
        uuid: str,
        *,
        ecc_uncorrected: int = 0,
        xid: int | None = None,
        temperature_c: int | None = None,
        foreign_memory_mb: int | None = None,
        foreign_processes: int | None = None,
    ) -> None:
        """Add faults: ECC errors and one XID event (code ``xid``) add up; the others are set."""
        faults = self._check(uuid)
        faults.ecc_uncorrected += ecc_uncorrected
        if xid is not None:
            faults.xids.append(xid)
        if temperature_c is not None:
            faults.temperature_c = temperature_c
        if foreign_memory_mb is not None:
            faults.foreign_memory_mb = foreign_memory_mb
        if foreign_processes is not None:
            faults.foreign_processes = foreign_processes

    def clear_faults(self, uuid: str | None = None) -> None:
        for u in [uuid] if uuid is not None else list(self._faults):
            self._check(u)
            self._faults[u] = _Faults()

    def xid_events(self, uuid: str) -> list[int]:
        return list(self._check(uuid).xids)

    def discover(self) -> list[GpuInfo]:
        return list(self._gpus)

    def sample(self, now: datetime) -> list[GpuSample]:
        if now.tzinfo is None:
            raise ValueError("sample time must be timezone-aware (UTC)")
        return [self._sample_one(gpu, now) for gpu in self._gpus]

    def _sample_one(self, gpu: GpuInfo, now: datetime) -> GpuSample:
        t = now.timestamp()
        shape = _digest("shape", self.seed, gpu.uuid)
        phase = shape[0] / 255 * 2 * math.pi
        period = 240.0 + shape[1] / 255 * 660.0
        level = 65.0 + shape[2] / 255 * 30.0
        rng = random.Random(_digest("noise", self.seed, gpu.uuid, round(t * 1_000_000)))
        wave = math.sin(2 * math.pi * t / period + phase)
        faults = self._faults[gpu.uuid]
        busy = gpu.uuid in self._busy
        total = gpu.memory_total_mb
        if busy:
            util = level + 10.0 * wave + rng.gauss(0.0, 3.0)
            memory = total * (0.55 + 0.25 * math.sin(2 * math.pi * t / (period * 1.7) + phase))
            memory += rng.gauss(0.0, total * 0.005)
        else:
            util = abs(rng.gauss(0.0, 0.6))
            memory = total * 0.006
        utilization = int(min(100.0, max(0.0, util)))
        memory_used = int(min(total, max(0.0, memory) + faults.foreign_memory_mb))
        idle_w, max_w = self._power[gpu.uuid]
        power = idle_w + (max_w - idle_w) * utilization / 100.0 * 0.85 + rng.gauss(0.0, max_w * 0.01)
        power = min(max_w, max(idle_w * 0.8, power))
        temperature = faults.temperature_c
        if temperature is None:
            temperature = round(30.0 + 50.0 * power / max_w + rng.gauss(0.0, 0.7))
        return GpuSample(
            uuid=gpu.uuid,
            ts=now,
            utilization_pct=utilization,
            memory_used_mb=memory_used,
            temperature_c=temperature,
            power_w=round(power, 1),
            ecc_uncorrected=faults.ecc_uncorrected,
            xid_errors=len(faults.xids),
            process_count=(1 if busy else 0) + faults.foreign_processes,
        )

    def close(self) -> None:
        """Nothing to release."""
