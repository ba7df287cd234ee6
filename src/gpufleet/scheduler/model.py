"""Plain, frozen value types the allocator reads and returns; no I/O, no clock.

The production scheduler builds these from a database snapshot, the simulator from a trace file.

GPU memory rules (the same everywhere):

* ``GpuState.memory_mb == 0`` means the GPU's memory is not known; memory is then not checked
  and nothing is reserved (the openb trace has no GPU memory).
* A whole-GPU job (``gpu_milli == 1000``) needs GPUs whose total memory is at least
  ``memory_mb`` and reserves all of each GPU's memory.
* A fractional job needs a GPU with at least ``memory_mb`` total memory and reserves
  ``memory_mb`` of its free memory; with ``memory_mb == 0`` it reserves the share proportional to
  its milli-GPU (``memory_mb_total * gpu_milli // 1000``), so milli-GPU and memory run out together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

READY = "ready"
AVAILABLE = "available"
WHOLE_GPU = 1000


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU of a host, as free capacity."""

    id: str
    model: str
    memory_mb: int
    free_milli: int = WHOLE_GPU
    free_memory_mb: int = -1  # -1: equal to memory_mb (an idle GPU)
    status: str = AVAILABLE  # anything else ("unhealthy", "draining", ...) is never used

    def __post_init__(self) -> None:
        if self.free_memory_mb == -1:
            object.__setattr__(self, "free_memory_mb", self.memory_mb)
        if not 0 <= self.free_milli <= WHOLE_GPU:
            raise ValueError(f"GPU {self.id}: free_milli must be in 0..1000, got {self.free_milli}")
        if self.memory_mb < 0 or not 0 <= self.free_memory_mb <= self.memory_mb:
            raise ValueError(f"GPU {self.id}: free_memory_mb must be in 0..memory_mb")


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
    """What one job asks for. ``gpu_count`` GPUs on one host, each with ``gpu_milli`` free."""

    id: str
    gpu_count: int = 1
    gpu_milli: int = WHOLE_GPU
    memory_mb: int = 0
    gpu_models: frozenset[str] = field(default_factory=frozenset)
    cpu_milli: int = 0
    ram_mb: int = 0
    priority: int = 0

    def __post_init__(self) -> None:
        if self.gpu_count < 0:
            raise ValueError(f"job {self.id}: gpu_count must be >= 0")
        if self.gpu_count == 0:
            if self.gpu_milli not in (0, WHOLE_GPU):
                raise ValueError(f"job {self.id}: a CPU-only job (gpu_count 0) cannot ask for gpu_milli")
            object.__setattr__(self, "gpu_milli", 0)
        elif not 1 <= self.gpu_milli <= WHOLE_GPU:
            raise ValueError(f"job {self.id}: gpu_milli must be in 1..1000, got {self.gpu_milli}")
        elif self.gpu_milli < WHOLE_GPU and self.gpu_count != 1:
            raise ValueError(f"job {self.id}: a fractional GPU (gpu_milli < 1000) needs gpu_count 1")
        if self.memory_mb < 0 or self.cpu_milli < 0 or self.ram_mb < 0:
            raise ValueError(f"job {self.id}: memory_mb, cpu_milli and ram_mb must be >= 0")

    @property
    def fractional(self) -> bool:
        return 0 < self.gpu_milli < WHOLE_GPU

    @property
    def total_gpu_milli(self) -> int:
        return self.gpu_count * self.gpu_milli


@dataclass(frozen=True, slots=True)
class GpuShare:
    """The part of one GPU a placement holds."""

    gpu_id: str
    milli: int
    memory_mb: int


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


def reserve_memory(job: JobRequest, gpu_memory_mb: int) -> int:
    """GPU memory a fractional job reserves on a GPU with ``gpu_memory_mb`` total."""
    if job.memory_mb:
        return job.memory_mb
    return gpu_memory_mb * job.gpu_milli // WHOLE_GPU
