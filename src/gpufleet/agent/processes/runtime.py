"""Runs jobs as processes on the host: start, wait, terminate, logs, and adoption after a restart.

Every job runs under a tiny supervisor shim (processes/shim.py) that leads the job's own process
group, writes stdout/stderr straight into files and records the exit status in a file. A
long-lived launcher process forks the supervisors (processes/launcher.py), so a job's start costs
no interpreter start; without one, each supervisor is a process of its own. Nothing the
job needs lives only in the agent's memory, so an agent restart loses neither the job, its output nor
its exit status. State directory layout::

    jobs/<job_id>.json                 what the runtime knows (pid, create_time, acked log offsets, ...)
    jobs/<job_id>.<attempt>.exit       written by the shim: "exit N" | "signal N" | "error MSG"
    logs/<job_id>/<attempt>.stdout     the job's output, followed into an acknowledged chunk queue
    logs/<job_id>/<attempt>.stderr

The state dir is 0700 and the job runs as another user where the agent can (processes/users.py),
so a job reads none of it. Its default working directory is ``WORK_ROOT/<job_id>.<attempt>/``,
outside the state dir, 0700 and owned by the job's user.

All methods run on the agent's event loop; none blocks on the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import psutil

from gpufleet.agent.processes.launch import (
    LaunchPaths,
    TrackedJob,
    fresh_files,
    prepare,
    start_supervisor,
    state_record,
    tracked_from_state,
)
from gpufleet.agent.processes.launcher import Launcher, pid_held
from gpufleet.agent.processes.logs import STREAMS, LogBuffer, LogChunk, LogFollower, Stream, tail_text
from gpufleet.agent.processes.proc import (
    TERMINATE_REASONS,
    ExitOutcome,
    LogStats,
    ProcessSpec,
    RecoveredJob,
    RunningJob,
    StartError,
    StateRecord,
    UnknownJobError,
    boot_id,
    group_members,
    kill_group,
    kill_pids,
    outcome_of,
    process_state,
    read_exit_file,
    start_ticks,
)
from gpufleet.agent.processes.users import (
    JobIdentity,
    JobUserError,
    JobUsers,
    default_work_root,
    prepare_work_root,
    release_slot,
)

__all__ = [
    "ExitOutcome",
    "LogChunk",
    "LogStats",
    "ProcessRuntime",
    "ProcessSpec",
    "RecoveredJob",
    "RunningJob",
    "UnknownJobError",
]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ProcessRuntime:
    """Jobs of one host, keyed by job id (one attempt at a time per job).

    Typical life: ``recover()`` at agent start; ``start()``; an uploader loop of ``drain_logs()`` /
    ``ack()``; ``wait()`` or ``terminate()``; once the outcome and all logs are reported, ``forget()``.
    ``clock`` stamps ``started_at``; ``base_env`` is what jobs may inherit from (default: os.environ).
    ``users`` says who jobs run as (default: the agent's own user); ``work_root`` where their
    default working directories go (default: ``default_work_root(state_dir)``). ``use_launcher``
    False: every job's supervisor is spawned on its own, as when no launcher can start.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        log_chunk_bytes: int = 64 * 1024,
        log_buffer_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], datetime] = _utcnow,
        base_env: Mapping[str, str] | None = None,
        poll_s: float = 0.1,
        users: JobUsers | None = None,
        work_root: Path | None = None,
        use_launcher: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.users = users or JobUsers()
        self.work_root = Path(work_root).absolute() if work_root is not None else default_work_root(self.state_dir)
        self._chunk_bytes, self._buffer_bytes = log_chunk_bytes, log_buffer_bytes
        LogBuffer("-", 0, chunk_bytes=log_chunk_bytes, buffer_bytes=log_buffer_bytes)  # validates
        self._clock = clock
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._poll_s = poll_s  # only where pidfd_open is unavailable
        self._jobs: dict[str, TrackedJob] = {}
        self._starting: set[str] = set()
        self._launcher = Launcher(enabled=use_launcher)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)  # also one made before jobs ran as another user
        for sub in ("jobs", "logs"):
            (self.state_dir / sub).mkdir(exist_ok=True, mode=0o700)
        prepare_work_root(self.work_root, state_dir=self.state_dir, users=self.users)
        self._boot_id = boot_id()

    # -- paths and state files -----------------------------------------------------------------

    def _state_path(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / f"{job_id}.json"

    def _exit_path(self, job_id: str, attempt: int) -> Path:
        return self.state_dir / "jobs" / f"{job_id}.{attempt}.exit"

    def _launch_path(self, job_id: str, attempt: int) -> Path:
        return self.state_dir / "jobs" / f"{job_id}.{attempt}.launch"

    def _log_paths(self, job_id: str, attempt: int) -> dict[Stream, Path]:
        return {s: self.state_dir / "logs" / job_id / f"{attempt}.{s}" for s in STREAMS}

    def _save(self, job: TrackedJob) -> None:
        record = state_record(job)
        if record is None:
            return
        path = self._state_path(job.job_id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(record.to_json(), encoding="utf-8")
        os.replace(tmp, path)

    def _get(self, job_id: str) -> TrackedJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJobError(f"unknown job: {job_id}") from None

    # -- starting ------------------------------------------------------------------------------

    async def start(self, spec: ProcessSpec) -> RunningJob:
        """Start a job. A job that cannot start comes back with a ``failed`` outcome, not an error."""
        user: JobIdentity | JobUserError | None = None
        if self.users.separate:
            try:  # off the event loop: it may create a user, and it sweeps the slot's uid
                user = await asyncio.to_thread(self.users.claim)
            except JobUserError as exc:
                user = exc
        previous = self._jobs.get(spec.job_id)
        if spec.job_id in self._starting or (previous is not None and previous.outcome is None):
            if isinstance(user, JobIdentity):
                release_slot(None, user.lock_fd)
            attempt = spec.attempt if previous is None else previous.attempt
            raise ValueError(f"job {spec.job_id} is already running (attempt {attempt})")
        if previous is not None:
            self.forget(spec.job_id)  # a new attempt replaces a finished one
        self._starting.add(spec.job_id)
        try:
            # Shielded: once its supervisor is forked, a job must be tracked and its state saved
            # (so a restarted agent adopts it) even if our caller is cancelled meanwhile.
            job = await asyncio.shield(self._launch_and_track(spec, user))
        finally:
            self._starting.discard(spec.job_id)
        return self._snapshot(job)

    async def _launch_and_track(self, spec: ProcessSpec, user: JobIdentity | JobUserError | None) -> TrackedJob:
        job = await self._launch(spec, user)
        self._jobs[job.job_id] = job
        if job.outcome is None:
            self._save(job)
            self._follow(job)
            self._watch(job)
        return job

    async def _launch(self, spec: ProcessSpec, user: JobIdentity | JobUserError | None) -> TrackedJob:
        job_id, attempt = spec.job_id, spec.attempt
        own_workdir = spec.working_dir is None
        workdir = str(self.work_root / f"{job_id}.{attempt}") if own_workdir else str(spec.working_dir)
        buffer = LogBuffer(job_id, attempt, chunk_bytes=self._chunk_bytes, buffer_bytes=self._buffer_bytes)
        job = TrackedJob(job_id, attempt, None, None, None, self._clock(), workdir, own_workdir, True, buffer)
        job.boot_id = self._boot_id
        logs = self._log_paths(job_id, attempt)
        exit_path, launch_path = self._exit_path(job_id, attempt), self._launch_path(job_id, attempt)
        fresh_files(logs, exit_path)
        if isinstance(user, JobIdentity):
            job.uid, job.lock_fd = user.uid, user.lock_fd
        try:
            if isinstance(user, JobUserError):
                raise user
            paths = LaunchPaths(Path(workdir), own_workdir, logs, exit_path, launch_path)
            prepare(spec, user, paths, base_env=self._base_env)
            job.pid, forked = await start_supervisor(paths, lock_fd=job.lock_fd, launcher=self._launcher)
        except (StartError, JobUserError, OSError) as exc:
            self._release(job)
            launch_path.unlink(missing_ok=True)
            reason = f"could not start the job: {exc}" if isinstance(exc, OSError) else str(exc)
            job.outcome = ExitOutcome("failed", None, None, reason)
            job.done.set()
            return job
        if forked:
            job.own_child, job.reaper = False, self._launcher
        # Unreaped (by us, or by the launcher until we ask), the shim cannot vanish before this
        # reads its identity; unless the launcher died meanwhile and init reaped it.
        try:
            job.create_time = psutil.Process(job.pid).create_time()
        except psutil.NoSuchProcess:
            job.create_time = time.time()
        job.start_ticks = start_ticks(job.pid)
        return job

    @staticmethod
    def _snapshot(job: TrackedJob) -> RunningJob:
        return RunningJob(job.job_id, job.attempt, job.pid, job.started_at, job.working_dir, job.outcome)

    def _follow(self, job: TrackedJob) -> None:
        job.follower = LogFollower(job.buffer, self._log_paths(job.job_id, job.attempt))
        job.tasks.append(asyncio.create_task(job.follower.run(), name=f"gpufleet-logs-{job.job_id}"))
        if job.outcome is not None:
            job.follower.process_exited()

    # -- noticing the end ----------------------------------------------------------------------

    def _watch(self, job: TrackedJob) -> None:
        assert job.pid is not None and job.create_time is not None
        try:
            fd = os.pidfd_open(job.pid)
        except ProcessLookupError:
            self._finish(job)
            return
        except (OSError, AttributeError):  # kernel < 5.3: poll
            job.tasks.append(asyncio.create_task(self._poll_exit(job), name=f"gpufleet-wait-{job.job_id}"))
            return
        held = job.reaper is not None and job.reaper.alive  # its zombie keeps the pid ours
        if not job.own_child and not held and process_state(job.pid, job.create_time, job.start_ticks) != "alive":
            os.close(fd)  # the pid was reused before we opened it: our process is gone
            self._finish(job)
            return
        job.pidfd = fd
        asyncio.get_running_loop().add_reader(fd, self._finish, job)

    async def _poll_exit(self, job: TrackedJob) -> None:
        assert job.pid is not None and job.create_time is not None
        while process_state(job.pid, job.create_time, job.start_ticks) == "alive":  # noqa: ASYNC110 - no pidfd to wait on
            await asyncio.sleep(self._poll_s)
        self._finish(job)

    def _unwatch(self, job: TrackedJob) -> None:
        if job.pidfd is not None:
            asyncio.get_running_loop().remove_reader(job.pidfd)
            os.close(job.pidfd)
            job.pidfd = None

    def _finish(self, job: TrackedJob) -> None:
        held = self._held(job)
        self._unwatch(job)
        if job.outcome is not None:
            return
        assert job.pid is not None and job.create_time is not None
        shim_code = None
        if job.own_child or held:
            # The shim is a zombie until reaped, which keeps its pid (the group id) from being reused:
            # kill what the job left behind in its group first, then reap.
            kill_group(job.pid, signal.SIGKILL)
        else:
            kill_pids(group_members(job.pid, job.create_time, job.start_ticks), signal.SIGKILL)
        self._release(job)
        if job.own_child:
            with contextlib.suppress(ChildProcessError):  # not our child after a real restart
                pid, status = os.waitpid(job.pid, os.WNOHANG)
                if pid:
                    shim_code = os.waitstatus_to_exitcode(status)
        record = read_exit_file(self._exit_path(job.job_id, job.attempt))
        if held:
            assert job.reaper is not None
            reaped = job.reaper.reap(job.pid)
            if record is None:  # the shim's own wait status is all there is: ask for it
                job.tasks.append(
                    asyncio.create_task(self._finish_reaped(job, reaped), name=f"gpufleet-reap-{job.job_id}")
                )
                return
        self._record_outcome(job, record, shim_code)

    async def _finish_reaped(self, job: TrackedJob, reaped: asyncio.Future[int | None]) -> None:
        shim_code = await reaped
        self._record_outcome(job, read_exit_file(self._exit_path(job.job_id, job.attempt)), shim_code)

    def _record_outcome(self, job: TrackedJob, record: tuple[str, str] | None, shim_code: int | None) -> None:
        rebooted = None not in (job.boot_id, self._boot_id) and job.boot_id != self._boot_id
        job.outcome = outcome_of(
            record, shim_code, terminating=job.terminating, killed=job.killed, grace_s=job.grace_s, rebooted=rebooted
        )
        self._save(job)
        job.done.set()
        if job.follower is not None:
            job.follower.process_exited()

    @staticmethod
    def _held(job: TrackedJob) -> bool:
        """The launcher's zombie of this job's shim still keeps its pid (the group id) ours."""
        return job.reaper is not None and job.pidfd is not None and pid_held(job.pidfd)

    def _release(self, job: TrackedJob) -> None:
        """The job is over: with a uid of its own, nothing of that uid may outlive it (a process
        that left the job's group included); then the slot is free for the next job."""
        fd, job.lock_fd = job.lock_fd, None
        if fd is not None:
            uid = job.uid if self.users.exclusive else None
            asyncio.get_running_loop().run_in_executor(None, release_slot, uid, fd)  # a /proc walk: off the loop

    # -- public operations on running jobs -----------------------------------------------------

    def running(self) -> list[str]:
        return [job_id for job_id, job in self._jobs.items() if job.outcome is None]

    def tracked(self) -> list[str]:
        """Every job not yet forgotten, running or ended (e.g. with logs still to upload)."""
        return list(self._jobs)

    async def wait(self, job_id: str) -> ExitOutcome:
        job = self._get(job_id)
        await job.done.wait()
        assert job.outcome is not None
        return job.outcome

    def outcome(self, job_id: str) -> ExitOutcome | None:
        return self._get(job_id).outcome

    def _signal(self, job: TrackedJob, sig: int) -> None:
        if job.outcome is not None or job.pid is None or job.create_time is None:
            return
        if job.own_child or self._held(job) or process_state(job.pid, job.create_time, job.start_ticks) == "alive":
            kill_group(job.pid, sig)  # the leader is alive (or our unreaped zombie): the id is ours
        else:
            kill_pids(group_members(job.pid, job.create_time, job.start_ticks), sig)

    async def terminate(self, job_id: str, *, grace_s: float = 30.0, reason: str = "cancelled") -> ExitOutcome:
        """SIGTERM the job's process group, SIGKILL it after ``grace_s``; outcome ``cancelled``,
        ``timed_out`` or ``interrupted`` (``reason``). A job that already ended keeps its own outcome."""
        if reason not in TERMINATE_REASONS:
            raise ValueError(f"reason must be one of {', '.join(TERMINATE_REASONS)}, not {reason!r}")
        job = self._get(job_id)
        if job.outcome is None and job.terminating is None:
            job.terminating, job.grace_s = reason, grace_s
            self._save(job)
        self._signal(job, signal.SIGTERM)
        try:
            await asyncio.wait_for(job.done.wait(), timeout=grace_s)
        except TimeoutError:
            job.killed = True
            self._save(job)
            self._signal(job, signal.SIGKILL)
            await job.done.wait()
        assert job.outcome is not None
        return job.outcome

    async def kill_recovered(self, job_id: str) -> ExitOutcome:
        """Kill an adopted job's process group now (e.g. the server says its attempt is stale)."""
        return await self.terminate(job_id, grace_s=0.0, reason="cancelled")

    # -- logs ----------------------------------------------------------------------------------

    async def drain_logs(self, job_id: str, max_bytes: int = 1 << 20, *, wait_s: float = 0.0) -> list[LogChunk]:
        """Chunks from the oldest unacknowledged one (so un-acked chunks come again), in order.

        With ``wait_s`` > 0 and nothing ready, waits up to that long for output.
        """
        job = self._get(job_id)
        follower = job.follower
        if follower is not None:
            follower.data_ready.clear()
        chunks = job.buffer.drain(max_bytes)
        if chunks or wait_s <= 0 or follower is None or follower.finished.is_set():
            return chunks
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follower.data_ready.wait(), wait_s)
        return job.buffer.drain(max_bytes)

    def ack(self, job_id: str, seq: int) -> None:
        """The chunks handed out up to ``seq`` are safely stored; they will not be sent again."""
        job = self._get(job_id)
        if job.buffer.ack(seq):
            self._save(job)

    def log_stats(self, job_id: str) -> LogStats:
        job = self._get(job_id)
        read = job.outcome is not None and (job.follower is None or job.follower.finished.is_set())
        return LogStats(job.buffer.buffered_bytes, job.buffer.dropped_total, read, dict(job.buffer.acked_offsets))

    def log_tail(self, job_id: str, max_bytes: int = 4096) -> str:
        """The last bytes of the job's stdout and stderr, as text (e.g. to say why a process died)."""
        job = self._get(job_id)
        return tail_text(self._log_paths(job_id, job.attempt), max_bytes)

    def process_of(self, job_id: str) -> tuple[int | None, int | None, str]:
        """The job's shim pid (its process group), its user's uid (None: the agent's) and working dir."""
        job = self._get(job_id)
        return job.pid, job.uid, job.working_dir

    def logs_complete(self, job_id: str) -> bool:
        """The job has ended and every byte of its output is acknowledged (or reported dropped)."""
        return self.log_stats(job_id).read_complete and self._get(job_id).buffer.empty

    # -- restart -------------------------------------------------------------------------------

    async def recover(self) -> list[RecoveredJob]:
        """After an agent restart: adopt the jobs still running, report those that ended meanwhile.

        Logs resume from the last acknowledged offsets. Call once, before starting new jobs.
        """
        found = []
        for path in sorted((self.state_dir / "jobs").glob("*.json")):
            if path.stem in self._jobs:
                continue
            try:
                record = StateRecord.from_json(path.read_text(encoding="utf-8"))
                job = tracked_from_state(record, chunk_bytes=self._chunk_bytes, buffer_bytes=self._buffer_bytes)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable job state %s: %s", path, exc)
                continue
            assert job.pid is not None and job.create_time is not None
            alive = job.outcome is None and process_state(job.pid, job.create_time, job.start_ticks) == "alive"
            self._jobs[job.job_id] = job
            if job.outcome is not None:
                job.done.set()
            self._follow(job)
            if job.outcome is None:
                if alive:
                    self._watch(job)
                else:
                    self._finish(job)
            found.append(RecoveredJob(job.job_id, job.attempt, job.pid, job.started_at, alive, job.outcome))
        return found

    # -- cleanup -------------------------------------------------------------------------------

    def forget(self, job_id: str, *, keep_workdir: bool = False) -> None:
        """Drop an ended job: its state, exit and log files and (unless kept) its default workdir."""
        job = self._get(job_id)
        if job.outcome is None:
            raise ValueError(f"job {job_id} is still running; terminate it first")
        self._unwatch(job)
        for task in job.tasks:
            task.cancel()
        for path in (
            self._state_path(job_id),
            self._exit_path(job_id, job.attempt),
            self._launch_path(job_id, job.attempt),
            *self._log_paths(job_id, job.attempt).values(),
        ):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.state_dir / "logs" / job_id).rmdir()
        if job.own_workdir and not keep_workdir:
            shutil.rmtree(job.working_dir, ignore_errors=True)
        del self._jobs[job_id]

    async def close(self) -> None:
        """Stop watching and following; the jobs themselves keep running (see ``recover``)."""
        tasks = []
        for job in self._jobs.values():
            self._unwatch(job)
            if job.lock_fd is not None:  # the running job's shim holds the slot on its own
                os.close(job.lock_fd)
                job.lock_fd = None
            tasks += job.tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._jobs.clear()
        await self._launcher.close()
        with contextlib.suppress(OSError):  # empty: leave no litter (e.g. under /var/lib) behind
            self.work_root.rmdir()
