"""Starting one job: its work dir, environment and launch file, then its shim (runtime_shim.py).

``ProcessRuntime`` (runtime.py) keeps the jobs; this module holds what one of them is
(``TrackedJob``) and the steps that turn a ``ProcessSpec`` into a running shim (``launch``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gpufleet.agent.runtime_logs import LogBuffer, LogFollower, Stream
from gpufleet.agent.runtime_proc import (
    ExitOutcome,
    ProcessSpec,
    StateRecord,
    check_working_dir,
    job_env,
    resolve_executable,
    spawn_shim,
    write_launch_file,
)
from gpufleet.agent.runtime_users import JobIdentity, make_workdir


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
    own_child: bool  # False for a process adopted after a restart (someone else reaps it)
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


@dataclass(frozen=True, slots=True)
class LaunchPaths:
    """Where one attempt's files go."""

    workdir: Path
    own_workdir: bool  # made (and removed) by the runtime, not given by the job
    logs: Mapping[Stream, Path]
    exit_file: Path
    launch_file: Path


def launch(
    spec: ProcessSpec,
    user: JobIdentity | None,
    paths: LaunchPaths,
    *,
    base_env: Mapping[str, str],
    lock_fd: int | None,
) -> int:
    """Prepare the work dir, the environment and the launch file, and spawn the job's shim; its pid.

    Raises ``StartError`` (or ``JobUserError``, ``OSError``) when the job cannot start: nothing
    of it runs then.
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
        gpu_memory_mb=spec.gpu_memory_mb,
        user=user,
        home=workdir,
    )
    check_working_dir(workdir)
    executable = resolve_executable(argv[0], env["PATH"], workdir, user)
    write_launch_file(
        paths.launch_file, exit_path=paths.exit_file, cwd=workdir, executable=executable, argv=argv, env=env, user=user
    )
    return spawn_shim(paths.launch_file, paths.logs["stdout"], paths.logs["stderr"], lock_fd)


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
