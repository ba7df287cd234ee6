"""Small builders for hand-made hosts and jobs."""

from __future__ import annotations

from gpufleet.scheduler.model import GpuState, HostState, JobRequest


def host(
    name: str,
    *,
    gpus: int = 2,
    free: int | None = None,
    model: str = "A100-80GB",
    memory_mib: int = 81920,
    milli: list[int] | None = None,
    cpu: int = 64_000,
    cpu_free: int | None = None,
    ram: int = 262_144,
    status: str = "ready",
    gpu_status: dict[int, str] | None = None,
) -> HostState:
    """A host with ``gpus`` GPUs, ``free`` of them idle (default all), or per-GPU free ``milli``."""
    if milli is None:
        idle = gpus if free is None else free
        milli = [1000 if i < idle else 0 for i in range(gpus)]
    states = gpu_status or {}
    gpu_list = tuple(
        GpuState(
            f"{name}/g{i}",
            model,
            memory_mib,
            m,
            memory_mib * m // 1000,
            states.get(i, "available"),
        )
        for i, m in enumerate(milli)
    )
    return HostState(name, name, cpu, cpu if cpu_free is None else cpu_free, ram, ram, gpu_list, status)


def job(
    gpus: int = 1,
    milli: int = 1000,
    *,
    id: str = "j",
    cpu: int = 0,
    ram: int = 0,
    memory_min_mib: int = 0,
    models: tuple[str, ...] = (),
) -> JobRequest:
    return JobRequest(
        id,
        gpu_count=gpus,
        gpu_milli=milli if gpus else 0,
        memory_min_mib=memory_min_mib,
        gpu_models=frozenset(models),
        cpu_milli=cpu,
        ram_mb=ram,
    )
