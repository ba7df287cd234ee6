"""Plain, frozen value types the allocator reads and returns; no I/O, no clock.

The production scheduler builds these from a database snapshot, the simulator from a trace file.

GPU memory rules (the same everywhere; every amount of memory is in MiB, and says so):

* ``GpuState.memory_mib == 0`` means the GPU's memory is not known; memory is then not checked
  and nothing is reserved (the openb trace has no GPU memory).
* A whole-GPU job (``gpu_milli == 1000``) needs GPUs whose total memory is at least
  ``memory_min_mib`` and reserves all of each GPU's memory.
* A fractional job needs a GPU with at least ``memory_min_mib`` total memory and reserves
  ``memory_min_mib`` of its free memory; with ``memory_min_mib == 0`` it reserves the share
  proportional to its milli-GPU (``memory_mib * gpu_milli // 1000``), so milli-GPU and memory run
  out together. What a placement reserves on each GPU is ``GpuShare.memory_mib``.

A job's request is the submitted ``GpuRequirement`` (domain/jobs.py), flattened into
``JobRequest`` by one function (``scheduler/decide.request_of``): the allocator reads these
attributes in its inner loops, and the simulator builds requests from traces without a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpufleet.domain.jobs import WHOLE_GPU_MILLI, gpu_share_error, is_fractional

READY = "ready"
AVAILABLE = "available"
WHOLE_GPU = WHOLE_GPU_MILLI


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU of a host, as free capacity."""

    id: str
    model: str
    memory_mib: int  # in all; 0: not known
    free_milli: int = WHOLE_GPU
    free_memory_mib: int = -1  # -1: equal to memory_mib (an idle GPU)
    status: str = AVAILABLE  # anything else ("unhealthy", "draining", ...) is never used

    def __post_init__(self) -> None:
        if self.free_memory_mib == -1:
            object.__setattr__(self, "free_memory_mib", self.memory_mib)
        if not 0 <= self.free_milli <= WHOLE_GPU:
            raise ValueError(f"GPU {self.id}: free_milli must be in 0..1000, got {self.free_milli}")
        if self.memory_mib < 0 or not 0 <= self.free_memory_mib <= self.memory_mib:
            raise ValueError(f"GPU {self.id}: free_memory_mib must be in 0..memory_mib")


@dataclass(frozen=True, slots=True)
class HostState:
    """One host: its free CPU, RAM and GPUs. Only a ``ready`` host is used."""

    id: str
    name: str
    cpu_milli_total: int
    cpu_milli_free: int
    ram_mb_total: int
    ram_mb_free: int
    gpus: tuple[GpuState, ...] = ()
    status: str = READY

    def __post_init__(self) -> None:
        if not 0 <= self.cpu_milli_free <= self.cpu_milli_total:
            raise ValueError(f"host {self.name}: cpu_milli_free must be in 0..cpu_milli_total")
        if not 0 <= self.ram_mb_free <= self.ram_mb_total:
            raise ValueError(f"host {self.name}: ram_mb_free must be in 0..ram_mb_total")


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What one job asks for: ``gpu_count`` GPUs on one host, each with ``gpu_milli`` free and at
    least ``memory_min_mib`` MiB in all, of one of ``gpu_models`` (resolved to the fleet's names).

    The GPU count and share follow ``domain.jobs.gpu_share_error``, the rules a submitted
    ``GpuRequirement`` is validated by; here they guard requests read from a trace.
    """

    id: str
    gpu_count: int = 1
    gpu_milli: int = WHOLE_GPU
    memory_min_mib: int = 0
    gpu_models: frozenset[str] = field(default_factory=frozenset)
    cpu_milli: int = 0
    ram_mb: int = 0
    priority: int = 0

    def __post_init__(self) -> None:
        broken = gpu_share_error(self.gpu_count, self.gpu_milli)
        if broken is not None:
            raise ValueError(f"job {self.id}: {broken[0]}: {broken[1]}")
        if self.gpu_count == 0:
            object.__setattr__(self, "gpu_milli", 0)
        if self.memory_min_mib < 0 or self.cpu_milli < 0 or self.ram_mb < 0:
            raise ValueError(f"job {self.id}: memory_min_mib, cpu_milli and ram_mb must be >= 0")

    @property
    def fractional(self) -> bool:
        return is_fractional(self.gpu_milli)

    @property
    def total_gpu_milli(self) -> int:
        return self.gpu_count * self.gpu_milli


@dataclass(frozen=True, slots=True)
class GpuShare:
    """The part of one GPU a placement holds."""

    gpu_id: str
    milli: int
    memory_mib: int  # reserved on this GPU (0 where its memory is not known)


@dataclass(frozen=True, slots=True)
class Placement:
    """A decision: the job runs on ``host_id`` with these GPU shares, CPU and RAM."""

    job_id: str
    host_id: str
    gpus: tuple[GpuShare, ...]
    cpu_milli: int
    ram_mb: int

    @property
    def gpu_milli(self) -> int:
        return sum(share.milli for share in self.gpus)


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """Why a job cannot be placed now; ``never`` when no host could hold it even if empty."""

    job_id: str
    reasons: tuple[str, ...]
    never: bool = False


def reserve_memory(job: JobRequest, gpu_memory_mib: int) -> int:
    """MiB of GPU memory a fractional job reserves on a GPU with ``gpu_memory_mib`` in all."""
    if job.memory_min_mib:
        return job.memory_min_mib
    return gpu_memory_mib * job.gpu_milli // WHOLE_GPU
