"""The Model Runner inside the agent: replicas' workers, from their environment to their last event.

A replica is a job (agent/jobs/runner.py runs it: start report, logs, kill orders, exit report, adoption);
this module does what is particular to it. ``prepare`` materializes the version (runner/envs.py)
and turns the job into the worker's command; ``started``/``adopt`` connect to the worker's socket
(runner/connection.py), wait for its ``setup()`` and report the replica ``ready`` (or ``failed``);
claimed predictions go to the worker and what it sends back becomes prediction events
(runner/events.py); ``ended`` fails what was in flight when a worker dies and reports a replica that
never became ready, before the job's exit is reported. Claims are runner/claims.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpufleet.agent.jobs.run import Run, wait_or_stop
from gpufleet.agent.processes.runtime import ExitOutcome, ProcessRuntime, ProcessSpec, UnknownJobError
from gpufleet.agent.runner.claims import Claimable, Claimer
from gpufleet.agent.runner.connection import WorkerConnection, WorkerGone
from gpufleet.agent.runner.envs import EnvCache, EnvironmentFailed
from gpufleet.agent.runner.events import EventSender
from gpufleet.agent.runner.replica import FILE_KEY, FILE_URL, InFlight, Replica, file_urls, has_files
from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.backoff import RetryDelay
from gpufleet.schemas.runner import ClaimedPredictionOut, ClaimOut, ReplicaAssignmentOut, ReplicaStateIn

log = logging.getLogger("gpufleet.agent.runner")

SOCKET_NAME = "worker.sock"
CONNECT_TIMEOUT_S = 120.0  # the worker binds its socket before importing the model
ERROR_TAIL_BYTES = 2000


class ModelRunner:
    def __init__(
        self,
        runtime: ProcessRuntime,
        api: AgentApi,
        credential: str,
        envs: EnvCache,
        *,
        backoff: RetryDelay,
        fence: Callable[[Run], object],
        claim_wait_s: float = 30.0,
    ) -> None:
        self.runtime, self.api, self.credential, self.envs = runtime, api, credential, envs
        self.backoff, self.fence = backoff, fence
        self.replicas: dict[str, Replica] = {}
        self.events = EventSender(api, credential, backoff=backoff)
        self.claimer = Claimer(api, credential, replicas=self._claimable, on_reply=self._on_claim, backoff=backoff)
        self.claimer.wait_s = claim_wait_s
        self.records = Path(runtime.state_dir) / "replicas"
        self.records.mkdir(exist_ok=True, mode=0o700)
        self._tasks: set[asyncio.Task[None]] = set()
        self._halt = asyncio.Event()

    def _claimable(self) -> list[Claimable]:
        return list(self.replicas.values())

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """The event sender, until ``close()`` (claims start as replicas become ready): it outlives
        the agent's stop signal, so what ending workers report still goes out while jobs stop."""
        await self.events.run()

    async def close(self) -> None:
        self._halt.set()
        self.claimer.close()
        await self.events.flushed(2.0)
        for rep in self.replicas.values():
            if rep.conn is not None:
                rep.conn.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the job's life (called by agent/jobs/runner.py) ------------------------------------------------

    async def prepare(self, run: Run, replica: ReplicaAssignmentOut, spec: ProcessSpec) -> ProcessSpec | ExitOutcome:
        """Materialize the version and make the job's spec the worker's; an outcome when it cannot run."""
        rep = Replica(run, replica)
        self.replicas[run.key] = rep
        try:
            env = await self.envs.materialize(replica)
        except EnvironmentFailed as exc:
            rep.error = f"the model's environment could not be prepared: {exc}"
            await self._report(rep, "failed")
            self._drop(rep)
            return ExitOutcome("failed", None, None, rep.error[:4000])
        rep.environment_s, rep.environment_cached = env.environment_s, env.cached
        self._save(rep)
        argv = [env.python, "-u", str(env.worker), "--socket", SOCKET_NAME, "--src", str(env.src)]
        argv += ["--ref", replica.predict_ref, "--concurrency", str(replica.concurrency)]
        worker_env = {
            **spec.env,
            "PYTHONUNBUFFERED": "1",
            "GPUFLEET_REPLICA_ID": str(replica.replica_id),
            "GPUFLEET_MODEL": replica.model,
            "GPUFLEET_VERSION": replica.digest,
        }
        return dataclasses.replace(spec, argv=argv, script=None, env=worker_env, working_dir=None)

    def started(self, run: Run) -> None:
        rep = self.replicas.get(run.key)
        if rep is not None and rep.task is None:
            rep.task = self._spawn(self._attach(rep))

    def adopt(self, run: Run) -> bool:
        """After an agent restart: a replica's worker is connected to again; False when ``run`` is
        not a replica's (no record of it)."""
        try:
            record = json.loads((self.records / f"{run.key}.json").read_text(encoding="utf-8"))
            spec = ReplicaAssignmentOut.model_validate(record["replica"])
        except (OSError, ValueError, KeyError):
            return False
        if record.get("attempt") != run.attempt:
            return False
        rep = Replica(run, spec, record.get("environment_s"), record.get("environment_cached"))
        rep.reported = record.get("reported")
        self.replicas[run.key] = rep
        log.info("replica %s of %s: adopting its worker", spec.replica_id, spec.deployment)
        rep.task = self._spawn(self._attach(rep))
        return True

    async def ended(self, run: Run, outcome: ExitOutcome) -> None:
        """The worker's process has ended: fail what it still had, report a replica that never got
        ready, and let those events reach the server before the job's exit does."""
        rep = self.replicas.get(run.key)
        if rep is None:
            return
        rep.gone = True
        if rep.task is not None:
            rep.task.cancel()
        if rep.conn is not None:
            rep.conn.close()
        tail = ""
        with contextlib.suppress(UnknownJobError):
            tail = self.runtime.log_tail(run.key, ERROR_TAIL_BYTES).strip()
        if rep.inflight:
            why = "the replica stopped" if outcome.status == "succeeded" else "the model's worker process died"
            error = f"{why} ({outcome.reason})" + (f"; its last output:\n{tail}" if tail else "")
            for pid in list(rep.inflight):
                self.events.add(pid, str(rep.replica_id), "done", status="failed", error=error[-4000:])
            rep.inflight.clear()
        if rep.reporting is not None:  # let a report on its way land first: one report per state
            await asyncio.wait({rep.reporting}, timeout=10)
        if rep.reported is None and not run.fenced:
            rep.error = rep.error or f"the worker exited before it was ready ({outcome.reason})" + (
                f": {tail}" if tail else ""
            )
            await self._report(rep, "failed")
        self.claimer.kick()
        await self.events.flushed(10.0)
        self._drop(rep)

    def forget(self, run: Run) -> None:
        rep = self.replicas.get(run.key)
        if rep is not None and rep.run is run:
            self._drop(rep)

    def _drop(self, rep: Replica) -> None:
        rep.gone = True
        if rep.conn is not None:
            rep.conn.close()
        if self.replicas.get(rep.key) is rep:
            del self.replicas[rep.key]
        (self.records / f"{rep.key}.json").unlink(missing_ok=True)
        self.claimer.kick()

    def _save(self, rep: Replica) -> None:
        record = {
            "attempt": rep.attempt,
            "replica": rep.spec.model_dump(mode="json"),
            "environment_s": rep.environment_s,
            "environment_cached": rep.environment_cached,
            "reported": rep.reported,
        }
        path = self.records / f"{rep.key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)

    # -- the worker's connection -----------------------------------------------------------------

    def _alive(self, rep: Replica) -> bool:
        try:
            return not rep.gone and self.runtime.outcome(rep.key) is None
        except UnknownJobError:
            return False

    async def _attach(self, rep: Replica) -> None:
        """Connect (again, while the worker lives) and relay what it says."""
        try:
            pid, uid, workdir = self.runtime.process_of(rep.key)
        except UnknownJobError:
            return
        while self._alive(rep):
            try:
                conn = await WorkerConnection.wait_open(
                    Path(workdir) / SOCKET_NAME,
                    pgid=pid,
                    uid=uid,
                    alive=lambda: self._alive(rep),
                    timeout_s=CONNECT_TIMEOUT_S,
                )
            except WorkerGone as exc:
                if self._alive(rep):
                    rep.error = f"the agent cannot reach the model's worker: {exc}"
                    log.error("replica %s: %s; stopping it", rep.replica_id, rep.error)
                    with contextlib.suppress(UnknownJobError):
                        await self.runtime.terminate(rep.key, grace_s=5.0, reason="cancelled")
                return
            rep.conn = conn
            try:
                while (message := await conn.receive()) is not None:
                    self._on_message(rep, message)
            finally:
                conn.close()
            if self._alive(rep):
                await asyncio.sleep(0.05)  # the worker closed on us while alive: connect again

    def _on_message(self, rep: Replica, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        log.debug("worker says %.200s", msg)
        rid = str(rep.replica_id)
        if kind == "status":
            self._on_status(rep, msg)
        elif kind in ("log", "output", "done"):
            pid = str(msg.get("id"))
            flight = rep.inflight.get(pid)
            if kind == "done" and flight is None:  # repeated after a reconnect: the server has it
                self._ack(rep, pid)
                return
            if kind == "done":
                del rep.inflight[pid]
                self.claimer.kick()
                self._maybe_shutdown(rep)
            chain = flight.chain if flight is not None else None
            if chain is not None or has_files(msg):
                task = self._spawn(self._relay_after(rep, rid, pid, msg, chain))
                if flight is not None:
                    flight.chain = task
            else:
                self._relay(rep, rid, pid, msg)
        else:
            log.warning("replica %s: unexpected message from its worker: %.200s", rep.replica_id, msg)

    def _relay(self, rep: Replica, rid: str, pid: str, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "log":
            self.events.add(pid, rid, "logs", text=str(msg.get("text", "")))
        elif kind == "output":
            self.events.add(pid, rid, "output", item=msg.get("item"))
        else:
            output = None if rep.spec.is_generator else msg.get("output")
            self.events.add(
                pid,
                rid,
                "done",
                sent=lambda ok, reason: self._ack(rep, pid),
                status=msg.get("status") or "failed",
                output=output,
                error=msg.get("error"),
                predict_time=msg.get("predict_time"),
            )

    async def _relay_after(
        self, rep: Replica, rid: str, pid: str, msg: dict[str, Any], chain: asyncio.Task[None] | None
    ) -> None:
        if chain is not None:
            await asyncio.wait({chain})
        try:
            for key in ("item", "output"):
                if key in msg:
                    msg[key] = await self._upload(pid, msg[key])
        except (ServerUnreachable, Refused, ValueError) as exc:
            error = f"an output file could not be uploaded: {exc}"
            if msg["type"] != "done":
                msg = {"type": "log", "text": f"[gpufleet] {error}\n"}
            else:
                msg = {**msg, "status": "failed", "output": None, "error": error}
        self._relay(rep, rid, pid, msg)

    async def _upload(self, pid: str, value: Any) -> Any:
        if isinstance(value, dict):
            meta = value.get(FILE_KEY)
            if isinstance(meta, dict) and len(value) == 1:
                data = base64.b64decode(str(meta.get("b64", "")))
                name = str(meta.get("name") or "output")
                content_type = str(meta.get("content_type") or "application/octet-stream")
                return (await self.api.upload_file(self.credential, pid, name, content_type, data)).url
            return {k: await self._upload(pid, v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self._upload(pid, v) for v in value]
        return value

    def _ack(self, rep: Replica, pid: str) -> None:
        if rep.conn is not None:
            rep.conn.send_nowait({"type": "ack", "id": pid})

    def _on_status(self, rep: Replica, msg: dict[str, Any]) -> None:
        state = msg.get("state")
        rep.slots = max(1, int(msg.get("concurrency") or 1))
        rep.setup_s = msg.get("setup_s")
        known = {str(i) for i in msg.get("inflight") or []}
        for pid in known - set(rep.inflight):  # adopted: predictions the worker is still serving
            rep.inflight[pid] = InFlight(pid, None)
        for flight in list(rep.inflight.values()):  # sent to a worker that never got it: again
            if flight.id not in known and flight.input is not None and rep.conn is not None:
                rep.conn.send_nowait({"type": "predict", "id": flight.id, "input": flight.input})
        if state == "ready" and not rep.ready and rep.reporting is None:
            rep.reporting = self._spawn(self._become_ready(rep))
        elif state == "failed":
            rep.error = str(msg.get("error") or "setup() failed")
            if rep.reported is None and rep.reporting is None:
                rep.reporting = self._spawn(self._reported(rep, "failed"))
        self.claimer.kick()

    async def _become_ready(self, rep: Replica) -> None:
        if rep.reported != "ready" and not await self._report(rep, "ready"):
            return
        rep.ready = True
        log.info(
            "replica %s of %s is ready (environment %.2f s%s, setup %.2f s)",
            rep.replica_id,
            rep.spec.deployment,
            rep.environment_s or 0.0,
            ", cached" if rep.environment_cached else "",
            rep.setup_s or 0.0,
        )
        self._maybe_shutdown(rep)
        self.claimer.kick()

    async def _reported(self, rep: Replica, state: str) -> None:
        await self._report(rep, state)

    async def _report(self, rep: Replica, state: str) -> bool:
        """POST the replica's state until it lands: True; False when refused (a 409 fences the job)."""
        body = ReplicaStateIn(
            job_id=rep.job_id,
            attempt=rep.attempt,
            state="ready" if state == "ready" else "failed",
            environment_s=rep.environment_s,
            environment_cached=rep.environment_cached,
            setup_s=rep.setup_s,
            error=None if state == "ready" else (rep.error or "failed")[-8000:],
        )
        failures = 0
        while not self._halt.is_set():
            try:
                await self.api.replica_state(self.credential, rep.replica_id, body)
                rep.reported = state
                with contextlib.suppress(OSError):
                    if self.replicas.get(rep.key) is rep:
                        self._save(rep)
                return True
            except ServerUnreachable as exc:
                failures += 1
                await wait_or_stop(self._halt, self.backoff(failures, exc.retry_after))
            except Refused as exc:
                log.error("replica %s: the server refused its %s state (%s)", rep.replica_id, state, exc)
                if exc.stale:
                    self.fence(rep.run)
                return False
        return False

    # -- claims ----------------------------------------------------------------------------------

    def _on_claim(self, reply: ClaimOut) -> bool:
        log.debug("claim reply: %s", reply)
        new = False
        by_id = {r.replica_id: r for r in self.replicas.values()}
        for p in reply.predictions:
            new = True
            rep = by_id.get(p.replica_id)
            if rep is None or not rep.listed or p.id in rep.inflight:
                if rep is None or p.id not in rep.inflight:
                    self.events.add(p.id, str(p.replica_id), "done", status="failed", error="the replica stopped")
                continue
            self._dispatch(rep, p)
        for pid in reply.cancel:
            for rep in self.replicas.values():
                flight = rep.inflight.get(pid)
                if flight is not None and not flight.cancel_sent and rep.conn is not None:
                    flight.cancel_sent, new = True, True
                    rep.conn.send_nowait({"type": "cancel", "id": pid})
        for rid in reply.drain:
            rep = by_id.get(rid)
            if rep is not None and not rep.drain:
                new, rep.drain = True, True
                log.info("replica %s of %s: draining", rep.replica_id, rep.spec.deployment)
                self._maybe_shutdown(rep)
        return new

    def _dispatch(self, rep: Replica, p: ClaimedPredictionOut) -> None:
        flight = InFlight(p.id, p.input)
        rep.inflight[p.id] = flight
        assert rep.conn is not None
        if file_urls(p.input):
            flight.chain = self._spawn(self._send_with_files(rep, flight))
        else:
            rep.conn.send_nowait({"type": "predict", "id": p.id, "input": p.input})

    async def _send_with_files(self, rep: Replica, flight: InFlight) -> None:
        async def fetch(value: Any) -> Any:
            if isinstance(value, str) and (m := FILE_URL.match(value)):
                data, name, content_type = await self.api.download_file(self.credential, m["id"])
                b64 = base64.b64encode(data).decode()
                return {FILE_KEY: {"name": name or "input", "content_type": content_type, "b64": b64}}
            if isinstance(value, dict):
                return {k: await fetch(v) for k, v in value.items()}
            if isinstance(value, list):
                return [await fetch(v) for v in value]
            return value

        try:
            payload = await fetch(flight.input)
        except (ServerUnreachable, Refused) as exc:
            rep.inflight.pop(flight.id, None)
            self.events.add(flight.id, str(rep.replica_id), "done", status="failed", error=f"input file: {exc}")
            self.claimer.kick()
            return
        if rep.conn is not None:
            with contextlib.suppress(WorkerGone):
                await rep.conn.send({"type": "predict", "id": flight.id, "input": payload})
        flight.input = payload

    def _maybe_shutdown(self, rep: Replica) -> None:
        if rep.drain and rep.ready and not rep.inflight and not rep.shutdown_sent and rep.conn is not None:
            rep.shutdown_sent = True
            rep.conn.send_nowait({"type": "shutdown"})
