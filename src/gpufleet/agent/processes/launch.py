"""Starting one job: its work dir, environment and launch file, then its supervisor (processes/shim.py).

``ProcessRuntime`` (runtime.py) keeps the jobs; this module holds what one of them is
(``TrackedJob``) and the steps that turn a ``ProcessSpec`` into a running supervisor (``prepare``,
``start_supervisor``): forked by the long-lived launcher (processes/launcher.py) or, without one,
spawned on its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gpufleet.agent.processes.logs import LogBuffer, LogFollower, Stream
from gpufleet.agent.processes.proc import (
    ExitOutcome,
    ProcessSpec,
    StateRecord,
    check_working_dir,
    job_env,
    resolve_executable,
    spawn_shim,
    write_launch_file,
)
from gpufleet.agent.processes.users import JobIdentity, make_workdir

if TYPE_CHECKING:
    from gpufleet.agent.processes.launcher import Launcher


@dataclass(eq=False)
class TrackedJob:
    """What the runtime knows of one job it started or adopted."""

    job_id: str
    attempt: int
    pid: int | None
    create_time: float | None
    start_ticks: int | None
    started_at: datetime
    working_dir: str
    own_workdir: bool
    own_child: bool  # False when someone else reaps it: adopted after a restart, or forked by the launcher
    buffer: LogBuffer
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: ExitOutcome | None = None
    terminating: str | None = None
    killed: bool = False
    grace_s: float | None = None
    follower: LogFollower | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pidfd: int | None = None
    uid: int | None = None
    boot_id: str | None = None
    lock_fd: int | None = None  # our copy of the job slot's lock: the uid is this job's until closed
    reaper: Launcher | None = None  # the launcher that forked it and keeps it a zombie until asked to reap


@dataclass(frozen=True, slots=True)
class LaunchPaths:
    """Where one attempt's files go."""

    workdir: Path
    own_workdir: bool  # made (and removed) by the runtime, not given by the job
    logs: Mapping[Stream, Path]
    exit_file: Path
    launch_file: Path


def fresh_files(logs: Mapping[Stream, Path], exit_path: Path) -> None:
    """Empty log files for a new attempt, and no exit file of an earlier one."""
    logs["stdout"].parent.mkdir(exist_ok=True, mode=0o700)
    for path in logs.values():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
    exit_path.unlink(missing_ok=True)


def prepare(
    spec: ProcessSpec,
    user: JobIdentity | None,
    paths: LaunchPaths,
    *,
    base_env: Mapping[str, str],
) -> None:
    """Prepare the work dir, the environment and the launch file for the job's supervisor.

    Raises ``StartError`` (or ``JobUserError``, ``OSError``) when the job cannot start.
    """
    if spec.argv is not None:
        argv = list(spec.argv)
    else:
        assert spec.script is not None
        argv = ["/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh", "-c", spec.script]
    workdir = str(paths.workdir)
    if paths.own_workdir:
        make_workdir(paths.workdir, user)
    env = job_env(
        base_env,
        spec.env,
        job_id=spec.job_id,
        attempt=spec.attempt,
        gpus=[str(g) for g in spec.gpus],
        gpu_milli=spec.gpu_milli,
        gpu_memory_mib=spec.gpu_memory_mib,
        user=user,
        home=workdir,
    )
    check_working_dir(workdir)
    executable = resolve_executable(argv[0], env["PATH"], workdir, user)
    write_launch_file(
        paths.launch_file, exit_path=paths.exit_file, cwd=workdir, executable=executable, argv=argv, env=env, user=user
    )


async def start_supervisor(paths: LaunchPaths, *, lock_fd: int | None, launcher: Launcher) -> tuple[int, bool]:
    """Start the prepared job's supervisor: its pid, and whether the launcher forked it (False:
    the agent spawned it, its own child). ``OSError`` when it cannot start: nothing runs then."""
    pid = await launcher.launch(paths.launch_file, paths.logs["stdout"], paths.logs["stderr"], lock_fd)
    if pid is not None:
        return pid, True
    return spawn_shim(paths.launch_file, paths.logs["stdout"], paths.logs["stderr"], lock_fd), False


def state_record(job: TrackedJob) -> StateRecord | None:
    """What a restarted agent needs of a running job (None before its supervisor is started)."""
    if job.pid is None or job.create_time is None:
        return None
    return StateRecord(
        job.job_id,
        job.attempt,
        job.pid,
        job.create_time,
        job.started_at,
        job.working_dir,
        job.own_workdir,
        job.terminating,
        job.killed,
        job.grace_s,
        dict(job.buffer.acked_offsets),
        job.buffer.acked_seq,
        job.outcome,
        job.start_ticks,
        job.uid,
        job.boot_id,
    )


def tracked_from_state(r: StateRecord, *, chunk_bytes: int, buffer_bytes: int) -> TrackedJob:
    """A job of a previous agent, from its state file: its logs resume after the acknowledged bytes."""
    buffer = LogBuffer(
        r.job_id,
        r.attempt,
        chunk_bytes=chunk_bytes,
        buffer_bytes=buffer_bytes,
        next_seq=r.acked_seq + 1,
        offsets=r.acked_offsets,
    )
    return TrackedJob(
        r.job_id,
        r.attempt,
        r.pid,
        r.create_time,
        r.start_ticks,
        r.started_at,
        r.working_dir,
        r.own_workdir,
        own_child=False,
        buffer=buffer,
        outcome=r.outcome,
        terminating=r.terminating,
        killed=r.killed,
        grace_s=r.grace_s,
        uid=r.uid,
        boot_id=r.boot_id,
    )
