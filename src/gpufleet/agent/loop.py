"""The agent's server loop: register once, then sample the GPUs every second, heartbeat every
interval with the samples taken since the last heartbeat that got through, and run the jobs the
server assigns (agent/jobs/runner.py).

Samples wait in a bounded buffer while the server is unreachable and go out later, oldest
first, in batches; network errors, 5xx and 429 are retried with exponential backoff and
jitter. Tests drive ``heartbeat_once()`` and ``sample_once()`` directly; ``run(stop)`` is the
program. What the server asks of the agent in a heartbeat's answer is handled in one place,
``handle_reply`` (job fencing hooks in there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gpufleet.agent.credentials import CredentialStore, StoredCredential, default_state_dir
from gpufleet.agent.gpus import GpuBackend, GpuDiscoveryError, GpuInfo, GpuSample, open_backend
from gpufleet.agent.hostinfo import HostFacts, collect_host_facts
from gpufleet.agent.jobs.runner import JobRunner
from gpufleet.agent.processes.runtime import ProcessRuntime
from gpufleet.agent.processes.users import JobUserError, JobUsers, hidden_from_jobs, job_users
from gpufleet.agent.replicas import same_fleet
from gpufleet.agent.runner.envs import EnvCache, PipOptions
from gpufleet.agent.runner.supervisor import ModelRunner
from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.backoff import delay_after
from gpufleet.schemas.agent import (
    GpuIn,
    GpuMetricsIn,
    HeartbeatRequest,
    HeartbeatResponse,
    HostFactsIn,
    RegisterRequest,
)

log = logging.getLogger("gpufleet.agent")
T = TypeVar("T")


class AgentError(Exception):
    """The agent cannot go on; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str  # one URL, or every replica's, comma-separated (agent/replicas.py)
    join_token: str | None = None
    name: str | None = None  # default: the hostname (or the simulated host's name)
    labels: dict[str, str] = field(default_factory=dict)
    simulate: str | None = None  # a spec such as 8xH100-80GB, or a hosts YAML file; None: NVML
    sim_host: str | None = None  # which host of the YAML file
    state_dir: Path = field(default_factory=default_state_dir)
    interval_s: float | None = None  # None: what the server says (10 s by default)
    sample_interval_s: float = 1.0
    buffer_samples: int = 50_000  # kept while the server is unreachable; the oldest go first
    batch_samples: int = 5_000  # per heartbeat; a backlog goes out in several heartbeats
    request_timeout_s: float = 30.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0  # under the server's 50 s liveness timeout
    stop_grace_s: float = 2.0  # how long a request in flight may finish after a stop
    seed: int = 0
    run_jobs: bool = True  # poll for assignments and run them (agent/jobs/runner.py)
    assignment_wait_s: float = 30.0  # assignment long-poll
    kill_grace_s: float = 30.0  # SIGTERM then SIGKILL after this, for the agent's own max_runtime_s check
    stop_jobs_on_exit: bool = False  # `gpufleet up`'s local agent: leave no job behind on shutdown
    job_user: str = "auto"  # auto (root: a gpufleet-job-N user per job), agent (its own user), or a user name
    work_dir: Path | None = None  # jobs' working directories; None: runtime_users.default_work_root
    env_dir: Path | None = None  # model environments (runner/envs.py); None: envs.default_env_root
    pip: PipOptions = field(default_factory=PipOptions)  # how model environments install packages


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        backend: GpuBackend | None = None,
        api: AgentApi | None = None,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.api = api or AgentApi(config.server, timeout=config.request_timeout_s)
        self.store = CredentialStore(config.state_dir)
        self.rng = rng or random.Random()
        self.now = now or (lambda: datetime.now(UTC))
        self.credential: StoredCredential | None = None
        self.facts: HostFacts | None = None
        self.gpus: list[GpuInfo] = []
        self.interval_s = config.interval_s or 10.0
        self.batch_samples = config.batch_samples
        self.buffer: deque[tuple[int, GpuSample]] = deque(maxlen=config.buffer_samples)
        self.dropped_samples = 0  # lost to a full buffer
        self.latest: dict[str, GpuSample] = {}  # each GPU's newest sample (the agent's own /metrics)
        self.heartbeats_ok = 0
        self.last_reply: HeartbeatResponse | None = None
        self.jobs: JobRunner | None = None
        self._seq = 0
        self._facts_sent = False
        self._job_users: JobUsers | None = None

    # -- start --------------------------------------------------------------------------

    def open(self) -> None:
        """Discover the GPUs and the host's facts; AgentError when that is impossible (no NVML)."""
        if self.backend is None:
            yaml = self.config.simulate is not None and self.config.simulate.endswith((".yaml", ".yml"))
            host = self.config.sim_host if yaml else self.config.name
            try:
                self.backend = open_backend(self.config.simulate, host=host, seed=self.config.seed)
            except GpuDiscoveryError as exc:
                raise AgentError(str(exc)) from None
            except (ValueError, OSError) as exc:
                raise AgentError(f"--simulate: {exc}") from None
        try:
            self.gpus = self.backend.discover()
        except GpuDiscoveryError as exc:
            raise AgentError(str(exc)) from None
        self.facts = collect_host_facts(self.backend)

    async def start(self, stop: asyncio.Event | None = None) -> StoredCredential | None:
        """Open the backend and load the stored credential, or register (retrying while unreachable).

        None: ``stop`` was set before the host was registered.
        """
        stop = stop or asyncio.Event()
        if self.facts is None:
            self.open()
        try:
            stored = self.store.load()
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        if stored is not None:
            if not same_fleet(stored.server, self.config.server):
                raise AgentError(
                    f"{self.store.path} holds a credential for {stored.server}, not {self.config.server}; "
                    "use another --state-dir for this server"
                )
            log.info("using the stored credential of host %s (%s)", stored.name, stored.host_id)
            self.credential = stored
            return stored
        if not self.config.join_token:
            raise AgentError(
                f"this host is not registered yet (no credential in {self.config.state_dir}); "
                "pass a join token in GPUFLEET_JOIN_TOKEN, with --join-token-file FILE or on stdin with "
                "--join-token - (create one with `gpufleet hosts join-token`)"
            )
        failures = 0
        while not stop.is_set():
            try:
                done, registered = await self._until_stopped(self.register(), stop)
                return registered if done else None
            except ServerUnreachable as exc:
                failures += 1
                delay = self._backoff(failures, exc.retry_after)
                log.warning("registration failed (%s); retrying in %.1f s", exc, delay)
                await _wait(stop, delay)
        return None

    async def register(self) -> StoredCredential:
        assert self.facts is not None and self.config.join_token
        facts = self.facts
        request = RegisterRequest(
            name=self.config.name or facts.hostname,
            labels={**facts.labels, **self.config.labels},
            facts=_facts_in(facts),
            gpus=[_gpu_in(g) for g in self.gpus],
        )
        try:
            reply = await self.api.register(self.config.join_token, request)
        except Refused as exc:
            raise AgentError(f"registration refused by {self.config.server}: {exc.detail}") from None
        stored = StoredCredential(
            server=self.config.server,
            host_id=reply.host_id,
            organization_id=reply.organization_id,
            name=reply.name,
            credential=reply.credential,
        )
        self.store.save(stored)
        self.credential = stored
        self._facts_sent = True
        if self.config.interval_s is None:
            self.interval_s = reply.heartbeat_interval_s
        log.info("registered host %s (%s) with %d GPUs", reply.name, reply.host_id, len(reply.gpus))
        return stored

    # -- sampling and heartbeats ----------------------------------------------------------

    def sample_once(self) -> int:
        """Take one sample of every GPU into the buffer; how many were taken."""
        assert self.backend is not None
        samples = self.backend.sample(self.now())
        for s in samples:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped_samples += 1
            self._seq += 1
            self.buffer.append((self._seq, s))
            self.latest[s.uuid] = s
        return len(samples)

    def _request(self, batch: list[GpuSample]) -> HeartbeatRequest:
        by_gpu: dict[str, list[GpuSample]] = {}
        for s in batch:
            by_gpu.setdefault(s.uuid, []).append(s)
        metrics = [
            GpuMetricsIn(
                uuid=uuid,
                ts=[s.ts for s in ss],
                utilization_pct=[s.utilization_pct for s in ss],
                memory_used_mb=[s.memory_used_mb for s in ss],
                temperature_c=[s.temperature_c for s in ss],
                power_w=[s.power_w for s in ss],
                ecc_uncorrected=[s.ecc_uncorrected for s in ss],
                xid_errors=[s.xid_errors for s in ss],
                process_count=[s.process_count for s in ss],
            )
            for uuid, ss in by_gpu.items()
        ]
        facts = None if self._facts_sent or self.facts is None else _facts_in(self.facts)
        running = self.jobs.running() if self.jobs is not None else []
        return HeartbeatRequest(facts=facts, gpus=[_gpu_in(g) for g in self.gpus], metrics=metrics, running=running)

    async def heartbeat_once(self) -> HeartbeatResponse:
        """Send one heartbeat with the oldest buffered samples (at most ``batch_samples``).

        On success they leave the buffer; on failure they stay for the next try. Raises
        ``ServerUnreachable`` (retry later), ``Refused`` (4xx other than 401) or ``AgentError``
        (the credential was refused: the agent must stop).
        """
        if self.credential is None:
            raise AgentError("heartbeat before the host was registered")
        entries = [e for _, e in zip(range(self.batch_samples), self.buffer, strict=False)]
        last_seq = entries[-1][0] if entries else 0
        request = self._request([s for _, s in entries])
        try:
            reply = await self.api.heartbeat(self.credential.credential, request)
        except Refused as exc:
            if exc.status == 401:
                moved = self.store.retire()
                where = f"; its credential was moved to {moved}" if moved else ""
                raise AgentError(
                    f"the server refused this host's credential ({exc.detail}): the agent stops{where}. "
                    "Start it again with a new join token (GPUFLEET_JOIN_TOKEN) to register the host anew."
                ) from None
            if exc.status == 413 and self.batch_samples > 1:
                self.batch_samples = max(1, self.batch_samples // 2)
            elif exc.status == 422 and entries:
                # The server will never take these samples; keeping them would block the rest.
                self._forget(last_seq)
                log.error("the server refused %d samples (%s); they were dropped", len(entries), exc.detail)
            raise
        self._forget(last_seq)
        if request.facts is not None:
            self._facts_sent = True
        self.handle_reply(reply)
        return reply

    def _forget(self, last_seq: int) -> None:
        while self.buffer and self.buffer[0][0] <= last_seq:
            self.buffer.popleft()

    def handle_reply(self, reply: HeartbeatResponse) -> None:
        """Everything a heartbeat's answer asks for: the interval, and the runs to stop (``instructions.kill``)."""
        self.last_reply = reply
        self.heartbeats_ok += 1
        if self.config.interval_s is None:
            self.interval_s = reply.heartbeat_interval_s
        for order in reply.instructions.kill:
            if self.jobs is not None:
                self.jobs.on_kill(order)
            else:
                log.warning("server asked to stop job %s attempt %d (%s)", order.job_id, order.attempt, order.reason)

    def job_users(self) -> JobUsers:
        """Who jobs run as (``--job-user``); decided once, at start, with its warning if unsafe."""
        if self._job_users is None:
            try:
                self._job_users = job_users(self.config.job_user, state_dir=self.config.state_dir)
            except JobUserError as exc:
                raise AgentError(str(exc)) from None
        return self._job_users

    def job_runner(self) -> JobRunner:
        """The job loop, over a process runtime in the state directory (docs/agent.md)."""
        assert self.credential is not None
        users = self.job_users()
        try:
            runtime = ProcessRuntime(self.config.state_dir, users=users, work_root=self.config.work_dir)
        except (JobUserError, OSError) as exc:
            raise AgentError(f"cannot prepare to run jobs: {exc}") from None
        hidden = hidden_from_jobs(users) if users.separate else None
        if hidden:
            log.warning(hidden)
        credential = self.credential.credential
        envs = EnvCache(
            self.config.state_dir,
            fetch=lambda version_id: self.api.version_archive(credential, version_id),
            root=self.config.env_dir,
            pip=self.config.pip,
            other_users=users.separate,
        )

        def models(jobs: JobRunner) -> ModelRunner:
            return ModelRunner(
                runtime, self.api, credential, envs, backoff=self._backoff, fence=lambda run: jobs.spawn(jobs.drop(run))
            )

        return JobRunner(
            runtime,
            self.api,
            self.credential.credential,
            backoff=self._backoff,
            backend=self.backend,
            poll_wait_s=self.config.assignment_wait_s,
            kill_grace_s=self.config.kill_grace_s,
            stop_jobs_on_exit=self.config.stop_jobs_on_exit,
            models=models,
        )

    def _backoff(self, failures: int, retry_after: float | None = None) -> float:
        # the first failure waits ``backoff_initial_s`` (delay_after counts the failures before it)
        delay = delay_after(
            self.config.backoff_initial_s, failures - 1, cap=self.config.backoff_max_s, equal=True, rng=self.rng
        )
        return max(delay, min(retry_after or 0.0, self.config.backoff_max_s))

    # -- the program ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Register (or reuse the credential), then sample, heartbeat and run jobs until ``stop`` is set.

        Returns when stopped (a request in flight gets ``stop_grace_s`` to finish, then is
        abandoned; jobs keep running for the next start to adopt, unless ``stop_jobs_on_exit``);
        raises ``AgentError`` when the agent cannot go on.
        """
        running: int | None = None  # jobs running when the agent stopped (None: it never ran any)
        try:
            if self.config.run_jobs:
                self.job_users()  # a bad --job-user stops the agent before it registers
            if await self.start(stop) is None:
                log.info("stopped before this host was registered")
                return
            tasks = [asyncio.create_task(self._sample_loop(stop), name="gpu-sampler")]
            if self.config.run_jobs:
                self.jobs = self.job_runner()
                tasks.append(asyncio.create_task(self.jobs.run(stop), name="job-loop"))
            try:
                await self._heartbeat_loop(stop)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self.jobs is not None:
                    running = len(self.jobs.running())
                    await self.jobs.close()
        finally:
            await self.close()
        log.info(stopped_line(running, stop_jobs=self.config.stop_jobs_on_exit))

    async def _sample_loop(self, stop: asyncio.Event) -> None:
        period = self.config.sample_interval_s
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # a GPU read failing must not end the agent
                log.warning("sampling the GPUs failed: %s", exc)
            next_at += period
            next_at = max(next_at, time.monotonic())  # after a stall, do not catch up in a burst
            if await _wait(stop, next_at - time.monotonic()):
                return

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                done, _ = await self._until_stopped(self.heartbeat_once(), stop)
                if not done:
                    return
                if failures:
                    log.info("heartbeat got through after %d failures", failures)
                failures = 0
                backlog = len(self.buffer) >= self.batch_samples
                delay = 0.0 if backlog else self.interval_s - (time.monotonic() - started)
            except ServerUnreachable as exc:
                failures += 1
                delay = self._backoff(failures, exc.retry_after)
                log.warning("heartbeat failed (%s); %d samples kept, retrying in %.1f s", exc, len(self.buffer), delay)
            except Refused as exc:
                failures += 1
                delay = self._backoff(failures)
                log.error("heartbeat refused (%s); retrying in %.1f s", exc, delay)
            if await _wait(stop, delay):
                return

    async def _until_stopped(self, work: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
        """Run ``work``; if ``stop`` comes first, give it ``stop_grace_s`` and then abandon it."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self.config.stop_grace_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False, None
            return True, task.result()
        finally:
            stopper.cancel()

    async def close(self) -> None:
        await self.api.aclose()
        if self.backend is not None:
            self.backend.close()


def stopped_line(running: int | None, *, stop_jobs: bool) -> str:
    """What the agent's last line says about the jobs it leaves (`gpufleet agent` logs it at stop)."""
    if not running:
        return "stopped; no job was running"
    jobs = f"{running} job{'' if running == 1 else 's'}"
    if stop_jobs:
        return f"stopped {jobs} (interrupted: the server requeues them per their host-loss policy)"
    return f"stopped; {jobs} left running for the next start to adopt"


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stop`` was set meanwhile."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def _facts_in(facts: HostFacts) -> HostFactsIn:
    return HostFactsIn(
        hostname=facts.hostname,
        os=facts.os[:200],
        kernel=facts.kernel[:200],
        arch=facts.arch[:200],
        cpu_cores=facts.cpu_cores,
        ram_mb=facts.ram_mb,
        driver_version=facts.driver_version,
        cuda_version=facts.cuda_version,
        agent_version=facts.agent_version,
        simulated=facts.simulated,
    )


def _gpu_in(g: GpuInfo) -> GpuIn:
    return GpuIn(
        uuid=g.uuid,
        index=g.index,
        model=g.model,
        memory_mb=g.memory_total_mb,
        pci_bus_id=g.pci_bus_id,
        mig_mode=g.mig_mode,
        driver_version=g.driver_version,
        simulated=g.simulated,
    )
