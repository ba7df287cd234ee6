"""The process runtime's value types and host-level pieces: environment, start checks, spawning the
shim, process identity and exit outcomes. The asyncio orchestration is in runtime.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import psutil

from gpufleet.agent.processes.logs import Stream
from gpufleet.agent.processes.users import JobIdentity, may_access, searchable_path
from gpufleet.domain.jobs import gpu_share_error, is_fractional

SHIM_PATH = Path(__file__).with_name("shim.py")

# Variables a job inherits from the agent's environment. An allow-list, not a deny-list: the
# agent's environment holds secrets under names nobody can list in advance (GPUFLEET_* keys and
# join tokens, cloud credentials, proxy passwords, whatever the service manager adds), and a job
# is less trusted than its host; what it needs beyond these it gets through its own spec's env.
# With a job user, HOME/USER/LOGNAME/TMPDIR are that user's (HOME: the job's work dir) instead.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
_PER_USER_ENV = ("HOME", "USER", "LOGNAME", "TMPDIR")

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# ``interrupted``: stopped because its host stopped (the agent shut down with --stop-jobs-on-exit,
# or the machine rebooted under it), not because of anything the job did or anyone asked.
OutcomeStatus = Literal["succeeded", "failed", "cancelled", "timed_out", "interrupted"]
TERMINATE_REASONS = ("cancelled", "timed_out", "interrupted")
_STOPPED_AS: dict[str, OutcomeStatus] = {
    "cancelled": "cancelled",
    "timed_out": "timed_out",
    "interrupted": "interrupted",
}
_LABELS = {"cancelled": "cancelled", "timed_out": "timed out", "interrupted": "interrupted: the agent stopped"}


@dataclass(frozen=True, slots=True)
class ExitOutcome:
    status: OutcomeStatus
    exit_code: int | None
    signal: int | None
    reason: str


class StartError(Exception):
    """The job cannot be started; the message says why, for the job's owner."""


class UnknownJobError(LookupError):
    """The runtime tracks no job with that id."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run. Exactly one of ``argv`` (exec'd directly) or ``script`` (run by bash -c)."""

    job_id: str
    attempt: int
    argv: Sequence[str] | None = None
    script: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None  # default: a fresh WORK_ROOT/<job_id>.<attempt> (never in the state dir)
    gpus: Sequence[str | int] = ()  # NVML UUIDs (preferred) or indices -> CUDA_VISIBLE_DEVICES
    gpu_milli: int | None = None  # 1..999: a fractional share of the single GPU in ``gpus``
    gpu_memory_mib: int | None = None  # MiB: the memory limit that goes with a fractional share

    def __post_init__(self) -> None:
        if not _JOB_ID_RE.match(self.job_id):
            raise ValueError(f"job id {self.job_id!r} must match {_JOB_ID_RE.pattern}")
        if self.attempt < 0:
            raise ValueError("attempt must be >= 0")
        if (self.argv is None) == (self.script is None):
            raise ValueError("give exactly one of argv or script")
        if self.argv is not None and (isinstance(self.argv, str) or not self.argv):
            raise ValueError("argv must be a non-empty list of strings")
        bad = [k for k in self.env if not k or "=" in k or "\0" in k]
        if bad:
            raise ValueError(f"invalid environment variable names: {bad}")
        if self.gpu_milli is not None:
            broken = gpu_share_error(1, self.gpu_milli)  # the share's range, as a job's own
            if broken is not None:
                raise ValueError(f"{broken[0]}: {broken[1]}")
            if is_fractional(self.gpu_milli) and len(self.gpus) != 1:
                raise ValueError("a fractional GPU share needs exactly one GPU")


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: str
    attempt: int
    pid: int | None  # the shim's pid, which is also the job's process group id
    started_at: datetime
    working_dir: str
    outcome: ExitOutcome | None  # already set when the job could not be started


@dataclass(frozen=True, slots=True)
class RecoveredJob:
    job_id: str
    attempt: int
    pid: int | None
    started_at: datetime
    alive: bool  # adopted: wait(), terminate() and the logs work as for a job started by this runtime
    outcome: ExitOutcome | None  # set when the job ended while the agent was down


@dataclass(frozen=True, slots=True)
class LogStats:
    buffered_bytes: int
    dropped_bytes: int
    read_complete: bool  # the job has ended and its files are read to the end
    acked_offsets: dict[Stream, int]


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The per-job state file (``jobs/<job_id>.json``): what a restarted agent needs."""

    job_id: str
    attempt: int
    pid: int  # the shim's, also the process group id
    create_time: float  # psutil's; with start_ticks, tells our process from a later one with its pid
    started_at: datetime
    working_dir: str
    own_workdir: bool
    terminating: str | None  # "cancelled" / "timed_out" / "interrupted" once terminate() began
    killed: bool  # SIGKILL was sent after the grace period
    grace_s: float | None
    acked_offsets: dict[Stream, int]
    acked_seq: int
    outcome: ExitOutcome | None
    start_ticks: int | None = None
    uid: int | None = None  # the job's user, when not the agent's
    boot_id: str | None = None  # the kernel's boot id when the job started: a later one means a reboot

    VERSION = 1

    def to_json(self) -> str:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["started_at"] = self.started_at.isoformat()
        data["outcome"] = None if self.outcome is None else asdict(self.outcome)
        return json.dumps({"version": self.VERSION, **data})

    @classmethod
    def from_json(cls, text: str) -> StateRecord:
        """Parse a state file; ValueError/KeyError/TypeError when it is not one."""
        data = json.loads(text)
        if data.pop("version", None) != cls.VERSION:
            raise ValueError("unsupported state file version")
        offsets, outcome, grace = data["acked_offsets"], data["outcome"], data["grace_s"]
        return cls(
            job_id=str(data["job_id"]),
            attempt=int(data["attempt"]),
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            working_dir=str(data["working_dir"]),
            own_workdir=bool(data["own_workdir"]),
            terminating=data["terminating"],
            killed=bool(data["killed"]),
            grace_s=None if grace is None else float(grace),
            acked_offsets={s: int(offsets.get(s, 0)) for s in ("stdout", "stderr")},
            acked_seq=int(data["acked_seq"]),
            outcome=None if outcome is None else ExitOutcome(**outcome),
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
            uid=None if data.get("uid") is None else int(data["uid"]),
            boot_id=None if data.get("boot_id") is None else str(data["boot_id"]),
        )


def signal_name(signum: int) -> str:
    try:
        return f"{signum} ({signal.Signals(signum).name})"
    except ValueError:
        return str(signum)


def job_env(
    base: Mapping[str, str],
    spec_env: Mapping[str, str],
    *,
    job_id: str,
    attempt: int,
    gpus: Sequence[str],
    gpu_milli: int | None,
    gpu_memory_mib: int | None,
    user: JobIdentity | None = None,
    home: str | None = None,
) -> dict[str, str]:
    """The job's environment: the allow-listed part of the agent's, the spec's, then gpufleet's own."""
    env = {k: v for k, v in base.items() if k in INHERITED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    if user is not None:
        # Only what the job's user can search: a pyenv or venv under root's 0700 home would shadow
        # the system's python3 for the job's own lookups (bash, execvp) with "permission denied".
        env["PATH"] = searchable_path(env["PATH"], user)
        for key in _PER_USER_ENV:
            env.pop(key, None)
        env["USER"] = env["LOGNAME"] = user.name
        if home is not None:
            env["HOME"] = home
    env.update(spec_env)
    # Set last, so a job cannot widen its own GPU view.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # indices mean what NVML means by them
    env["GPUFLEET_JOB_ID"] = job_id
    env["GPUFLEET_ATTEMPT"] = str(attempt)
    if gpu_milli is not None and is_fractional(gpu_milli):
        env["GPUFLEET_GPU_SHARE"] = f"{gpu_milli / 1000:.3f}"
        if gpu_memory_mib is not None:
            env["GPUFLEET_GPU_MEMORY_LIMIT_MB"] = str(gpu_memory_mib)  # the variable's name is public: MiB
    return env


def check_working_dir(path: str) -> None:
    if not os.path.exists(path):
        raise StartError(f"working directory does not exist: {path}")
    if not os.path.isdir(path):
        raise StartError(f"working directory is not a directory: {path}")
    if not os.access(path, os.X_OK):
        raise StartError(f"permission denied: cannot enter working directory {path}")


def resolve_executable(name: str, search_path: str, cwd: str, user: JobIdentity | None = None) -> str:
    """The absolute path the job's argv[0] runs, searched like execvp does (as the job's user), or StartError."""
    if "/" in name:
        candidates = [os.path.join(cwd, name)]
    else:
        candidates = [os.path.join(cwd, d, name) for d in search_path.split(os.pathsep)]
    denied = None
    for path in candidates:
        if os.path.isfile(path):
            if may_access(path, user, os.X_OK):
                return os.path.abspath(path)
            denied = denied or path
        elif os.path.isdir(path) and "/" in name:
            raise StartError(f"permission denied: {name} is a directory")
    if denied is not None:
        by = "" if user is None else f" by the job's user {user.name}"
        raise StartError(f"permission denied: {name} is not executable{by}")
    raise StartError(f"executable not found: {name}")


def write_launch_file(
    path: Path,
    *,
    exit_path: Path,
    cwd: str,
    executable: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    user: JobIdentity | None = None,
) -> None:
    who = "" if user is None else f"{user.uid}:{user.gid}:{','.join(map(str, user.groups))}"
    fields: list[str] = [str(exit_path), cwd, executable, who, str(len(argv)), *argv]
    fields += [f"{k}={v}" for k, v in env.items()]
    encoded = [os.fsencode(f) for f in fields]
    if any(b"\0" in f for f in encoded):
        raise StartError("argv and environment must not contain NUL characters")
    data = b"\0".join(encoded)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def spawn_shim(launch_path: Path, stdout_path: Path, stderr_path: Path, lock_fd: int | None = None) -> int:
    """Start the shim in a new session (its pid is the job's pgid); returns its pid.

    ``lock_fd`` (a job slot's lock) becomes the shim's fd 3, so the slot stays taken while the job runs."""
    extra = [] if lock_fd is None else [(os.POSIX_SPAWN_DUP2, lock_fd, 3)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(stdout_path, flags, 0o600)
    try:
        err = os.open(stderr_path, flags, 0o600)
        try:
            return os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", str(SHIM_PATH), str(launch_path)],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, err, 2),
                    *extra,
                ],
                setsid=True,
            )
        finally:
            os.close(err)
    finally:
        os.close(out)


def read_exit_file(path: Path) -> tuple[str, str] | None:
    """``("exit", "3")``, ``("signal", "9")``, ``("error", message)``, or None if absent/unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    kind, _, value = text.partition(" ")
    if kind == "error" or (kind in ("exit", "signal") and value.lstrip("-").isdigit()):
        return kind, value
    return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22).

    Unlike psutil's create_time, it does not move when the wall clock is stepped.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _same_process(proc: psutil.Process, create_time: float, ticks: int | None) -> bool:
    now_ticks = start_ticks(proc.pid) if ticks is not None else None
    if ticks is not None and now_ticks is not None:
        return now_ticks == ticks
    return abs(proc.create_time() - create_time) < 1.0


def process_state(pid: int, create_time: float, ticks: int | None = None) -> Literal["alive", "exited"]:
    """Whether ``pid`` is still the process we started (its start time guards against pid reuse)."""
    try:
        proc = psutil.Process(pid)
        if not _same_process(proc, create_time, ticks):
            return "exited"
        return "exited" if proc.status() == psutil.STATUS_ZOMBIE else "alive"
    except psutil.Error:
        return "exited"


def group_members(pgid: int, leader_create_time: float, leader_ticks: int | None = None) -> list[int]:
    """Live processes left in the group our (now dead) leader ``pgid`` started.

    If a live process other than our leader has that pid, the id was free and has been reused:
    nothing of ours can be left in that group.
    """
    try:
        leader = psutil.Process(pgid)
        if leader.status() != psutil.STATUS_ZOMBIE and not _same_process(leader, leader_create_time, leader_ticks):
            return []
    except psutil.Error:
        pass
    members = []
    for proc in psutil.process_iter():
        try:
            if (
                proc.pid != pgid
                and os.getpgid(proc.pid) == pgid
                and proc.create_time() >= leader_create_time - 1
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def kill_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def boot_id() -> str | None:
    """The kernel's id of this boot: a job whose state names another one died with a reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def outcome_of(
    exit_record: tuple[str, str] | None,
    shim_code: int | None,
    *,
    terminating: str | None,
    killed: bool,
    grace_s: float | None,
    rebooted: bool = False,
) -> ExitOutcome:
    """How a job ended, from the shim's exit file and (when we reaped it) the shim's own status.

    ``shim_code`` follows ``os.waitstatus_to_exitcode``: negative means killed by that signal.
    ``rebooted``: the machine restarted since the job started (it was recovered after a reboot).
    """
    if exit_record is not None and exit_record[0] == "error":
        return ExitOutcome("failed", None, None, exit_record[1])
    code: int | None = None
    sig: int | None = None
    if exit_record is not None:
        value = int(exit_record[1])
        code, sig = (value, None) if exit_record[0] == "exit" else (None, value)
    elif shim_code is not None:
        code, sig = (shim_code, None) if shim_code >= 0 else (None, -shim_code)
    if terminating is not None:
        status: OutcomeStatus = _STOPPED_AS.get(terminating, "cancelled")
        label = _LABELS[status]
        if killed:
            return ExitOutcome(
                status, None, signal.SIGKILL.value, f"{label}; killed by SIGKILL after a {grace_s:g} s grace period"
            )
        if sig is not None:
            detail = f"stopped by signal {signal_name(sig)}"
        elif code is not None:
            detail = f"exited with code {code} after SIGTERM"
        else:
            detail = "stopped while the agent was down"
        return ExitOutcome(status, code, sig, f"{label}; {detail}")
    if rebooted and (sig is not None or code is None):
        how = "" if sig is None else f"; killed by signal {signal_name(sig)}"
        return ExitOutcome("interrupted", None, sig, f"interrupted: the host restarted{how}")
    if sig is not None:
        return ExitOutcome("failed", None, sig, f"killed by signal {signal_name(sig)}")
    if code is None:
        return ExitOutcome("failed", None, None, "agent restarted; exit status lost")
    if code == 0:
        return ExitOutcome("succeeded", 0, None, "exited with code 0")
    return ExitOutcome("failed", code, None, f"exited with code {code}")
