"""Running the work on hosts: assignments, exit reports, logs, reconciliation, the execution policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from uuid import UUID

from gpufleet.domain.jobs import is_fractional

if TYPE_CHECKING:
    from gpufleet.config import Settings
    from gpufleet.domain.predictions import AssignedReplica


# ``interrupted``: the attempt's host stopped it (agent shutdown, reboot): not the job's failure.
OutcomeStatus = Literal["succeeded", "failed", "cancelled", "timed_out", "interrupted"]


OUTCOMES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out", "interrupted"})


LogStream = Literal["stdout", "stderr", "system"]


AgentStream = Literal["stdout", "stderr"]


KillReason = Literal["cancelled", "timed_out", "fenced"]


ReconcileAction = Literal["continue", "kill", "forget"]


# Why the server ended an attempt itself (event data ``reason`` / ``status_reason`` prefix).
HOST_LOST = "host_lost"


HOST_STOPPED = "host_stopped"  # the agent reported ``interrupted``: its host stopped the attempt


PROCESS_LOST = "agent restarted; process not found"


EXIT_STATUS_LOST = "agent restarted; exit status lost"


@dataclass(frozen=True, slots=True)
class AssignedGpu:
    """One GPU share of an assignment: ``uuid`` goes into CUDA_VISIBLE_DEVICES."""

    gpu_id: UUID
    uuid: str
    index: int
    model: str
    milli: int  # 1000: the whole GPU
    memory_mib: int  # the memory the share may use (allocations.memory_mb)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A job placed on this host, to run as attempt ``attempt``; every report quotes both."""

    job_id: UUID
    attempt: int
    name: str
    command: list[str] | None  # exactly one of command (argv) and script
    script: str | None
    env: dict[str, str]
    working_dir: str | None
    max_runtime_s: int | None  # the server judges it too (database clock)
    gpus: list[AssignedGpu]
    gpu_milli: int  # per GPU; below 1000 a fractional share of the one GPU
    cpu_milli: int
    ram_mb: int
    allocated_at: datetime | None
    replica: AssignedReplica | None = None  # a deployment's replica: the agent runs its model runner

    @property
    def fractional(self) -> bool:
        return is_fractional(self.gpu_milli)


@dataclass(frozen=True, slots=True)
class ExitReport:
    """How an attempt ended, as the agent's runtime saw it (its ``ExitOutcome``)."""

    status: OutcomeStatus
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""

    @property
    def start_failure(self) -> bool:
        """Failed without ever running (executable not found, bad working directory...)."""
        return self.status == "failed" and self.exit_code is None and self.signal is None


@dataclass(frozen=True, slots=True)
class LogChunkIn:
    """One chunk as the agent uploads it (its runtime's ``LogChunk``).

    ``(stream, offset)`` identifies the bytes for good; ``seq`` orders chunks across streams.
    A marker (``dropped_bytes > 0``, no data) stands for bytes the agent had to drop.
    """

    seq: int
    stream: AgentStream
    offset: int
    data: bytes = b""
    dropped_bytes: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    acked_seq: int | None  # the highest agent seq of the batch: the agent may ack up to it
    stored_chunks: int
    stored_bytes: int
    duplicate_chunks: int  # already received (resent after a lost reply): ignored
    truncated: bool  # the attempt reached the log cap; later output is not stored


ReportVerdict = Literal["applied", "stale", "invalid"]


@dataclass(frozen=True, slots=True)
class StartedReport:
    job_id: UUID
    attempt: int
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class ExitItem:
    job_id: UUID
    attempt: int
    outcome: ExitReport


@dataclass(frozen=True, slots=True)
class LogsItem:
    """An attempt's ordered output; ``invalid``: why the wire form could not even be decoded."""

    job_id: UUID
    attempt: int
    chunks: tuple[LogChunkIn, ...] = ()
    invalid: tuple[str, str] | None = None  # (message, field)


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """Applied in this order, in one transaction: starts, then logs, then exits."""

    started: tuple[StartedReport, ...] = ()
    exits: tuple[ExitItem, ...] = ()
    logs: tuple[LogsItem, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's answer: applied; stale (its attempt is fenced: the single route's 409); invalid (422)."""

    job_id: UUID
    attempt: int
    result: ReportVerdict
    detail: str | None = None
    current_attempt: int | None = None
    field: str | None = None
    ack: AppendResult | None = None  # logs items that were applied


@dataclass(frozen=True, slots=True)
class BatchResult:
    started: list[ItemResult]
    exits: list[ItemResult]
    logs: list[ItemResult]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A stored chunk. ``seq`` is the server's order within the attempt (0, 1, 2, ...)."""

    attempt: int
    seq: int
    stream: LogStream
    offset: int  # byte offset within its stream
    data: bytes
    created_at: datetime

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of an attempt's logs; pass ``last_seq`` back as ``after_seq`` for the next."""

    job_id: UUID
    attempt: int
    chunks: list[LogEntry]
    last_seq: int
    complete: bool  # the attempt is over and every stored chunk has been read
    job_status: str
    current_attempt: int  # the job's attempt now (a later one after a requeue)


@dataclass(frozen=True, slots=True)
class KillInstruction:
    """Stop this attempt: SIGTERM, SIGKILL after ``grace_s``, then report its exit."""

    job_id: UUID
    attempt: int
    reason: KillReason
    grace_s: float


@dataclass(frozen=True, slots=True)
class ReconcileEntry:
    """What a restarted agent knows of one attempt: still alive, or ended (with its outcome if known)."""

    job_id: UUID
    attempt: int
    alive: bool
    outcome: ExitReport | None = None


@dataclass(frozen=True, slots=True)
class ReconcileDecision:
    job_id: UUID
    attempt: int
    action: ReconcileAction  # continue running / kill now / forget (its outcome is recorded or moot)
    reason: str | None = None
    grace_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    decisions: list[ReconcileDecision]
    lost: list[UUID] = field(default_factory=list)  # jobs the server ran here that the agent did not know


@dataclass(frozen=True, slots=True)
class ReapResult:
    requeued: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    deferred: int = 0  # host-loss requeues held back by the rate limit (next pass)
    cancelled: list[UUID] = field(default_factory=list)
    timed_out: list[UUID] = field(default_factory=list)
    skipped: bool = False  # another replica's reaper held the lock


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    """The limits and timings running work is judged by (from Settings, built once)."""

    log_cap_bytes: int = 16 * 1024 * 1024
    log_batch_max_bytes: int = 8 * 1024 * 1024
    log_batch_max_chunks: int = 1000
    cancel_grace_s: float = 30.0
    fence_grace_s: float = 5.0
    kill_margin_s: float = 30.0
    host_loss_grace_s: float = 60.0
    requeue_rate_per_minute: int = 100
    assignment_poll_max_s: float = 30.0
    poll_s: float = 0.5
    reaper_batch: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutionPolicy:
        return cls(
            log_cap_bytes=settings.job_log_cap_bytes,
            log_batch_max_bytes=settings.job_log_batch_max_bytes,
            cancel_grace_s=settings.cancel_grace_s,
            kill_margin_s=settings.kill_report_margin_s,
            host_loss_grace_s=settings.host_loss_grace_s,
            requeue_rate_per_minute=settings.requeue_rate_per_minute,
            assignment_poll_max_s=settings.assignment_poll_max_s,
            poll_s=settings.execution_poll_s,
            reaper_batch=settings.reaper_batch_size,
        )
