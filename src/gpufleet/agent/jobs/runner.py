"""The agent's job loop: long-poll assignments, run each as a process, stream its logs, report its end.

One ``JobRunner`` per agent. ``run(stop)`` first recovers what the runtime knew before a restart
and reconciles it with the server, then long-polls ``/v1/agent/assignments``. Each (job, attempt)
gets one supervisor task: report ``started`` (pid), pump the logs (``drain_logs`` -> upload ->
``ack`` only once the server took them), and when the process has ended and every byte is
uploaded, report ``exit``. Kill orders (heartbeat replies, and the long-poll's for a cancel or a
fence) and the local ``max_runtime_s`` check
terminate a run; a 409 on any report means the attempt was fenced: the run is killed and
forgotten without another word to the server (docs/agent.md, "Running jobs for the server").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gpufleet.agent.gpus import GpuBackend, SimulatedBackend
from gpufleet.agent.jobs.reporter import Reporter
from gpufleet.agent.jobs.restart import recover
from gpufleet.agent.jobs.run import Run, wait_or_stop
from gpufleet.agent.processes.runtime import ExitOutcome, LogChunk, ProcessRuntime, ProcessSpec, UnknownJobError
from gpufleet.agent.runner.supervisor import ModelRunner
from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.backoff import RetryDelay
from gpufleet.schemas.agent import KillOrder
from gpufleet.schemas.execution import (
    AssignmentOut,
    ExitIn,
    ExitItemIn,
    LogChunkWire,
    LogsItemIn,
    LogsResultOut,
    RunningJobIn,
    StartedIn,
    StartedItemIn,
)

log = logging.getLogger("gpufleet.agent.jobs.runner")

UPLOAD_BYTES = 512 * 1024  # raw log bytes per upload: base64 and JSON keep it under the 1 MiB body limit


class JobRunner:
    def __init__(
        self,
        runtime: ProcessRuntime,
        api: AgentApi,
        credential: str,
        *,
        backoff: RetryDelay,
        backend: GpuBackend | None = None,
        poll_wait_s: float = 30.0,
        kill_grace_s: float = 30.0,
        stop_jobs_on_exit: bool = False,
        upload_bytes: int = UPLOAD_BYTES,
        models: Callable[[JobRunner], ModelRunner] | None = None,
    ) -> None:
        self.runtime = runtime
        self.api = api
        self.credential = credential
        self.backoff = backoff
        self.backend = backend
        self.poll_wait_s = poll_wait_s
        self.kill_grace_s = kill_grace_s
        self.stop_jobs_on_exit = stop_jobs_on_exit
        self.upload_bytes = upload_bytes
        self.runs: dict[str, Run] = {}
        self._busy: dict[str, int] = {}
        self._stop = asyncio.Event()  # no new work
        self._halt = asyncio.Event()  # no more retries of reports and uploads (close())
        self._launching: set[str] = set()
        self._told: set[tuple[str, int]] = set()  # (key, attempt)s a kill order reached
        self._tasks: set[asyncio.Task[None]] = set()
        self.reconciled = asyncio.Event()
        # Starts, log uploads and exits of every run leave together (agent/jobs/reporter.py).
        self.reporter = Reporter(api, credential, backoff=backoff, halt=self._halt, max_log_bytes=2 * upload_bytes)
        # Replicas of deployments (assignments with ``replica``): runner/supervisor.py
        self.models = models(self) if models is not None else None

    # -- what the heartbeat says and hears ------------------------------------------------------

    def running(self) -> list[RunningJobIn]:
        """The (job, attempt)s this host runs, for every heartbeat."""
        return [
            RunningJobIn(job_id=r.job_id, attempt=r.attempt)
            for r in self.runs.values()
            if not (r.finished or r.fenced or r.bad_spec)
        ]

    def unstopped(self) -> list[RunningJobIn]:
        """The runs not being stopped yet, for the assignment long-poll (a stop of one ends it)."""
        return [
            RunningJobIn(job_id=r.job_id, attempt=r.attempt)
            for r in self.runs.values()
            if not (r.finished or r.fenced or r.bad_spec or r.stopping is not None or (r.key, r.attempt) in self._told)
        ]

    def on_kill(self, order: KillOrder) -> None:
        """A kill order from a heartbeat or long-poll reply: cancelled / timed_out (reported), fenced (not)."""
        run = self.runs.get(str(order.job_id))
        if run is None or run.attempt != order.attempt or run.finished:
            return
        self._told.add((run.key, run.attempt))  # not listed in long-polls again: told once is enough
        log.warning("stopping job %s attempt %d (%s, grace %g s)", run.job_id, run.attempt, order.reason, order.grace_s)
        if order.reason == "fenced":
            run.fenced = True
        reason = order.reason if order.reason in ("cancelled", "timed_out") else "cancelled"
        self.terminate(run, reason, order.grace_s)

    # -- the program ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Recover and reconcile, then poll for assignments until ``stop``; never raises for the server."""
        self._stop = stop
        if self.models is not None:
            self.spawn(self.models.run())
        if not await self.recover():
            return
        failures = 0
        while not stop.is_set():
            await self._starts_settled()
            try:
                reply = await self.api.assignments(self.credential, wait_s=self.poll_wait_s, running=self.unstopped())
            except (ServerUnreachable, Refused) as exc:
                failures += 1
                delay = self.backoff(failures, getattr(exc, "retry_after", None))
                log.warning("assignment poll failed (%s); retrying in %.1f s", exc, delay)
                await wait_or_stop(stop, delay)
                continue
            failures = 0
            for order in reply.kill:  # pushed stops: a cancel or a fence, sooner than the heartbeat
                self.on_kill(order)
            new = [a for a in reply.assignments if self._is_new(a)]
            for assignment in new:
                self._launch(assignment)
            if reply.assignments and not new:
                await wait_or_stop(stop, 0.05)  # all known: their start reports are on their way

    def _is_new(self, a: AssignmentOut) -> bool:
        key = str(a.job_id)
        if key in self._launching:
            return False
        run = self.runs.get(key)
        if run is None:
            return True
        if run.attempt >= a.attempt:
            return False
        # A later attempt of a job whose old attempt this host still has: the old one is stale.
        self._launching.add(key)
        self.spawn(self._replace(run, a))
        return False

    async def _replace(self, old: Run, a: AssignmentOut) -> None:
        old.fenced = True
        self.terminate(old, "cancelled", 0.0)
        if old.task is not None:
            await asyncio.wait({old.task})
        self._launching.discard(str(a.job_id))
        self._launch(a)

    async def _starts_settled(self, limit_s: float = 2.0) -> None:
        """Wait (briefly) for start reports in flight: until they land, a poll returns the same jobs
        at once, and polling in a loop would only slow the server that must take those reports."""
        waits = [r.start_settled.wait() for r in self.runs.values() if not r.start_settled.is_set()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), limit_s)

    def spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- starting -------------------------------------------------------------------------------

    def _launch(self, a: AssignmentOut) -> None:
        run = Run(a.job_id, a.attempt, tuple(g.uuid for g in a.gpus), a.max_runtime_s)
        self.runs[run.key] = run
        # The server says what share the job holds (gpu_milli); a fraction is of its one GPU.
        share = a.gpus[0] if a.fractional and a.gpus else None
        try:
            spec = ProcessSpec(
                run.key,
                a.attempt,
                argv=a.command,
                script=None if a.command is not None else a.script,
                env=a.env,
                working_dir=a.working_dir,
                gpus=list(run.gpus),
                gpu_milli=a.gpu_milli if a.fractional else None,
                gpu_memory_mib=share.memory_mb if share is not None else None,
            )
        except ValueError as exc:
            run.bad_spec = ExitOutcome("failed", None, None, f"cannot run this job: {exc}")
            run.task = self.spawn(self.supervise(run, None))
            return
        if a.replica is not None and self.models is not None:
            run.task = self.spawn(self._launch_replica(run, a, spec))
            return
        run.task = self.spawn(self.supervise(run, spec))

    async def _launch_replica(self, run: Run, a: AssignmentOut, spec: ProcessSpec) -> None:
        """A deployment's replica: its model's environment first, then its worker runs as the job."""
        assert self.models is not None and a.replica is not None
        prepared = await self.models.prepare(run, a.replica, spec)
        if isinstance(prepared, ExitOutcome):
            run.bad_spec = prepared
        await self.supervise(run, None if isinstance(prepared, ExitOutcome) else prepared)

    async def supervise(self, run: Run, spec: ProcessSpec | None) -> None:
        timer: asyncio.Task[None] | None = None
        starting: asyncio.Task[bool] | None = None
        try:
            if spec is not None:
                started = await self.runtime.start(spec)
                run.pid, run.started_at = started.pid, started.started_at
                if started.outcome is None:
                    self._set_busy(run, True)
                    # Its output is uploaded meanwhile: a short job's start, logs and exit may then
                    # leave in one request (the server applies them in that order).
                    starting = asyncio.create_task(self._report_started(run, started.pid))
                else:
                    run.started_reported = True
            elif self.models is not None and run.bad_spec is None:
                self.models.adopt(run)  # after a restart: a replica's worker is connected to again
            if starting is None:
                run.start_settled.set()
            if run.max_runtime_s is not None:
                timer = asyncio.create_task(self._enforce_runtime(run, run.max_runtime_s))
            await self.pump(run)
            replica = self.models is not None and run.key in self.models.replicas
            if starting is not None and (replica or run.fenced or self._halt.is_set()) and not await starting:
                return  # refused (the run is dropped) or the agent is stopping
            if self._halt.is_set():
                return
            if run.fenced:
                await self.drop(run)
                return
            outcome = run.bad_spec or self.runtime.outcome(run.key)
            assert outcome is not None
            self._set_busy(run, False)
            if self.models is not None:
                await self.models.ended(run, outcome)
            exit_in = ExitIn(
                attempt=run.attempt,
                status=outcome.status,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                reason=outcome.reason[:4000],
            )
            # Not waiting for the start report's answer: the reporter keeps a run's reports in order.
            ended = await self._report(run, "exit", exit_in)
            if starting is not None and not await starting:
                return  # its start was refused: the run is dropped already
            if ended:
                self._forget(run)
        except UnknownJobError:
            pass  # dropped meanwhile (fenced)
        except Exception:
            log.exception("job %s attempt %d: the agent's supervisor failed", run.job_id, run.attempt)
            raise
        finally:
            run.start_settled.set()
            if timer is not None:
                timer.cancel()
            if starting is not None and not starting.done():
                starting.cancel()

    async def _report_started(self, run: Run, pid: int | None) -> bool:
        """The start report, while the run's output is already being uploaded; True once it landed."""
        try:
            if not await self._report(run, "started", StartedIn(attempt=run.attempt, pid=pid)):
                return False
            if self.models is not None:
                self.models.started(run)
            run.started_reported = True
            return True
        finally:
            run.start_settled.set()

    async def _enforce_runtime(self, run: Run, limit_s: int) -> None:
        """The agent's own timeout; the server judges it too, on its clock."""
        started = run.started_at or datetime.now(UTC)
        left = limit_s - (datetime.now(UTC) - started).total_seconds()
        try:
            await asyncio.wait_for(self.runtime.wait(run.key), max(0.0, left))
        except TimeoutError:
            log.warning("job %s attempt %d ran past its max_runtime_s (%d s)", run.job_id, run.attempt, limit_s)
            self.terminate(run, "timed_out", self.kill_grace_s)

    # -- stopping -------------------------------------------------------------------------------

    def terminate(self, run: Run, reason: str, grace_s: float) -> None:
        if run.stopping is not None or run.bad_spec is not None:
            return
        try:
            if self.runtime.outcome(run.key) is not None:
                return
        except UnknownJobError:
            return
        run.stopping = self.spawn(self._terminate_now(run, reason, grace_s))

    async def _terminate_now(self, run: Run, reason: str, grace_s: float) -> None:
        with contextlib.suppress(UnknownJobError):
            await self.runtime.terminate(run.key, grace_s=grace_s, reason=reason)

    async def drop(self, run: Run) -> None:
        """A fenced run: make sure its process is gone, then forget it without reporting."""
        run.fenced = True
        if run.bad_spec is None:
            self.terminate(run, "cancelled", 0.0)
            with contextlib.suppress(UnknownJobError):
                await self.runtime.wait(run.key)
        log.warning("job %s attempt %d was fenced by the server: killed and forgotten", run.job_id, run.attempt)
        self._forget(run)

    def _forget(self, run: Run) -> None:
        run.finished = True
        self._told.discard((run.key, run.attempt))
        self._set_busy(run, False)
        if self.models is not None:
            self.models.forget(run)
        if self.runs.get(run.key) is run:
            del self.runs[run.key]
        if run.bad_spec is None:
            with contextlib.suppress(UnknownJobError, ValueError):
                self.runtime.forget(run.key)

    def _set_busy(self, run: Run, busy: bool) -> None:
        if not isinstance(self.backend, SimulatedBackend):
            return
        for uuid in run.gpus:
            count = self._busy.get(uuid, 0) + (1 if busy else -1)
            self._busy[uuid] = max(0, count)
            with contextlib.suppress(KeyError, ValueError):
                self.backend.set_busy(uuid, count > 0)
        if not busy:
            run.gpus = ()  # once only

    # -- talking to the server ------------------------------------------------------------------

    async def _report(self, run: Run, what: str, body: StartedIn | ExitIn) -> bool:
        """Send a report until it lands: True; False when refused (a stale answer fences the run).
        The reporter retries it after network trouble; ``None``: the agent is stopping."""
        if run.fenced:
            await self.drop(run)
            return False
        item = (StartedItemIn if isinstance(body, StartedIn) else ExitItemIn)(job_id=run.job_id, **body.model_dump())
        try:
            answer = await self.reporter.send(item)
        except Refused as exc:  # the whole request refused
            return await self._refused(run, what, str(exc))
        if answer is None:
            if run.fenced:
                await self.drop(run)
            return False
        if answer.result == "stale":
            await self.drop(run)
            return False
        if answer.result == "invalid":
            return await self._refused(run, what, f"{answer.field}: {answer.detail}")
        return True

    async def _refused(self, run: Run, what: str, why: str) -> bool:
        log.error(
            "job %s attempt %d: the server refused the %s report (%s); forgetting the run",
            run.job_id,
            run.attempt,
            what,
            why,
        )
        if run.bad_spec is None and self.runtime.outcome(run.key) is None:
            await self.drop(run)
        else:
            self._forget(run)
        return False

    async def pump(self, run: Run) -> None:
        """Upload the run's output until the process has ended and every byte is acknowledged."""
        if run.bad_spec is not None:
            return
        while not run.fenced and not self._halt.is_set() and not self.runtime.logs_complete(run.key):
            chunks = await self.runtime.drain_logs(run.key, self.upload_bytes, wait_s=1.0)
            if not chunks or run.fenced:
                continue
            item = LogsItemIn(job_id=run.job_id, attempt=run.attempt, chunks=[_wire(c) for c in chunks])
            try:
                answer = await self.reporter.send(item)
            except Refused as exc:  # the whole request refused
                if exc.status == 413 and self.upload_bytes > 16 * 1024:
                    self.upload_bytes //= 2
                    self.reporter.max_log_bytes = 2 * self.upload_bytes
                    continue
                answer = LogsResultOut(job_id=run.job_id, attempt=run.attempt, result="invalid", detail=str(exc))
            if answer is None:  # stopping
                return
            if answer.result == "stale":
                run.fenced = True
                return
            if answer.result == "invalid" or not isinstance(answer, LogsResultOut) or answer.ack is None:
                # The server will never take these; keeping them would block the rest.
                log.error(
                    "job %s: the server refused %d log chunks (%s); they were dropped",
                    run.job_id,
                    len(chunks),
                    answer.detail,
                )
                self.runtime.ack(run.key, chunks[-1].seq)
                continue
            ack = answer.ack
            seq = chunks[-1].seq if ack.acked_seq is None else min(ack.acked_seq, chunks[-1].seq)
            self.runtime.ack(run.key, seq)

    # -- restarts (agent/jobs/restart.py) ---------------------------------------------------------

    async def recover(self) -> bool:
        """Adopt what the runtime still has, upload ended runs' logs, then reconcile with the server.

        False: stopped before the server answered.
        """
        return await recover(self)

    async def close(self) -> None:
        """Stop supervising. The jobs keep running (a restarted agent adopts them) unless
        ``stop_jobs_on_exit``: then they are terminated as ``interrupted`` (nobody cancelled them and
        they did not fail: their host stopped; the server requeues them per their host-loss retry
        policy) and the outcome is kept for the next start if the report does not land now."""
        if self.stop_jobs_on_exit:
            for run in list(self.runs.values()):
                self.terminate(run, "interrupted", min(self.kill_grace_s, 5.0))
            stopping = [r.stopping for r in self.runs.values() if r.stopping is not None]
            if stopping:
                await asyncio.wait(stopping, timeout=10)
            # Let their logs and exits reach the server if it still answers; what does not is
            # reported by the next start (the outcomes are in the runtime's state files).
            supervisors = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
            if supervisors:
                await asyncio.wait(supervisors, timeout=3)
        self._halt.set()
        await self.reporter.close()
        if self.models is not None:
            await self.models.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runtime.close()


def _wire(chunk: LogChunk) -> LogChunkWire:
    return LogChunkWire(
        seq=chunk.seq,
        stream=chunk.stream,
        offset=chunk.offset,
        data_b64=base64.b64encode(chunk.data).decode("ascii"),
        dropped_bytes=chunk.dropped_bytes,
    )
