"""Reading workload traces: Alibaba's openb CSV files and gpufleet's own YAML format."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from gpufleet.scheduler.model import WHOLE_GPU, GpuState, HostState, JobRequest

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")

_HOST_KEYS = {"name", "count", "cpu_milli", "ram_mb", "gpus"}
_GPU_KEYS = {"model", "count", "memory_mb"}
_JOB_KEYS = {"name", "count", "gpus", "gpu_milli", "memory_mb", "gpu_models", "cpu_milli", "ram_mb", "priority"}


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and the line or entry."""


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in {".yaml", ".yml"}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from None


def _csv_rows(path: Path, required: tuple[str, ...], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of every row; a file without ``required`` columns or rows is a TraceError."""
    reader = csv.DictReader(_read_text(path).splitlines())
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}")
    rows = list(enumerate(reader, start=2))
    if not rows:
        raise TraceError(f"{path}: no {what}")
    return rows


def _csv_name(row: dict[str, str], column: str, line: int, prefix: str) -> str:
    """The row's name, or ``<prefix>-<n>`` for the n-th row when it has none."""
    return (row[column] or "").strip() or f"{prefix}-{line - 1}"


def _int(path: Path, line: int, row: dict[str, str], column: str) -> int:
    raw = (row.get(column) or "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise TraceError(f"{path}:{line}: column {column} must be an integer, got {raw!r}") from None
    if value < 0:
        raise TraceError(f"{path}:{line}: column {column} must be >= 0, got {value}")
    return value


def load_hosts(path: Path, *, with_memory: bool = False) -> list[HostState]:
    """Hosts from an openb node CSV (sn,cpu_milli,memory_mib,gpu,model) or a YAML ``hosts:`` list.

    GPU memory is not in the openb trace, so its GPUs have memory_mib 0 (not checked). Host RAM
    is kept only ``with_memory``; the published protocol counts CPU and GPU only.
    """
    if _is_yaml(path):
        return _yaml_hosts(path)
    hosts = []
    for line, row in _csv_rows(path, NODE_COLUMNS, "hosts"):
        name = _csv_name(row, "sn", line, "node")
        cpu = _int(path, line, row, "cpu_milli")
        ram = _int(path, line, row, "memory_mib") if with_memory else 0
        count = _int(path, line, row, "gpu")
        model = (row["model"] or "").strip()
        gpus = tuple(GpuState(f"{name}/gpu{i}", model, 0) for i in range(count))
        hosts.append(HostState(name, name, cpu, cpu, ram, ram, gpus))
    return hosts


def load_jobs(path: Path, *, with_memory: bool = False) -> list[JobRequest]:
    """Jobs from an openb pod CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]) or YAML."""
    if _is_yaml(path):
        return _yaml_jobs(path)
    jobs = []
    for line, row in _csv_rows(path, POD_COLUMNS, "pods"):
        name = _csv_name(row, "name", line, "pod")
        count = _int(path, line, row, "num_gpu")
        milli = _int(path, line, row, "gpu_milli") if count else 0
        spec = (row.get("gpu_spec") or "").strip()
        models = frozenset(m.strip() for m in spec.split("|") if m.strip())
        try:
            jobs.append(
                JobRequest(
                    name,
                    gpu_count=count,
                    gpu_milli=milli,
                    gpu_models=models,
                    cpu_milli=_int(path, line, row, "cpu_milli"),
                    ram_mb=_int(path, line, row, "memory_mib") if with_memory else 0,
                )
            )
        except ValueError as exc:
            raise TraceError(f"{path}:{line}: {exc}") from None
    return jobs


def _yaml_list(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise TraceError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list) or not doc[key]:
        raise TraceError(f"{path}: expected a mapping with a non-empty '{key}:' list")
    entries: list[dict[str, Any]] = doc[key]
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise TraceError(f"{path}: {key} entry {n} must be a mapping")
    return entries


def _field(path: Path, where: str, entry: dict[str, Any], key: str, default: int) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TraceError(f"{path}: {where}: '{key}' must be an integer >= 0, got {value!r}")
    return value


def _check_keys(path: Path, where: str, entry: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise TraceError(f"{path}: {where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _yaml_hosts(path: Path) -> list[HostState]:
    hosts = []
    for n, entry in enumerate(_yaml_list(path, "hosts"), start=1):
        where = f"hosts entry {n}"
        _check_keys(path, where, entry, _HOST_KEYS)
        base = str(entry.get("name") or f"host-{n}")
        groups = entry.get("gpus", [])
        groups = [groups] if isinstance(groups, dict) else groups
        if not isinstance(groups, list):
            raise TraceError(f"{path}: {where}: 'gpus' must be a mapping or a list of mappings")
        cpu = _field(path, where, entry, "cpu_milli", 0)
        ram = _field(path, where, entry, "ram_mb", 0)
        replicas = _field(path, where, entry, "count", 1)
        for r in range(replicas):
            name = base if replicas == 1 else f"{base}-{r}"
            gpus: list[GpuState] = []
            for group in groups:
                if not isinstance(group, dict) or not isinstance(group.get("model", ""), str):
                    raise TraceError(f"{path}: {where}: each gpus entry needs a 'model' string")
                _check_keys(path, where, group, _GPU_KEYS)
                memory = _field(path, where, group, "memory_mb", 0)
                for _ in range(_field(path, where, group, "count", 1)):
                    gpus.append(GpuState(f"{name}/gpu{len(gpus)}", str(group.get("model", "")), memory))
            hosts.append(HostState(name, name, cpu, cpu, ram, ram, tuple(gpus)))
    return hosts


def _yaml_jobs(path: Path) -> list[JobRequest]:
    jobs = []
    for n, entry in enumerate(_yaml_list(path, "jobs"), start=1):
        where = f"jobs entry {n}"
        _check_keys(path, where, entry, _JOB_KEYS)
        base = str(entry.get("name") or f"job-{n}")
        models = entry.get("gpu_models", [])
        if isinstance(models, str):
            models = [m for m in models.split("|") if m]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise TraceError(f"{path}: {where}: 'gpu_models' must be a list of model names")
        count = _field(path, where, entry, "gpus", 1)
        replicas = _field(path, where, entry, "count", 1)
        priority = entry.get("priority", 0)
        if not isinstance(priority, int):
            raise TraceError(f"{path}: {where}: 'priority' must be an integer")
        for r in range(replicas):
            try:
                jobs.append(
                    JobRequest(
                        base if replicas == 1 else f"{base}-{r}",
                        gpu_count=count,
                        gpu_milli=_field(path, where, entry, "gpu_milli", WHOLE_GPU if count else 0),
                        memory_min_mib=_field(path, where, entry, "memory_mb", 0),
                        gpu_models=frozenset(models),
                        cpu_milli=_field(path, where, entry, "cpu_milli", 0),
                        ram_mb=_field(path, where, entry, "ram_mb", 0),
                        priority=priority,
                    )
                )
            except ValueError as exc:
                raise TraceError(f"{path}: {where}: {exc}") from None
    return jobs
