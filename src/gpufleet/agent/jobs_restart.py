"""An agent's restart: adopt the runs its runtime still has, and settle each with the server.

``ProcessRuntime.recover()`` finds the runs of the previous agent (alive, or ended meanwhile
with their outcome). Ended runs upload the rest of their output first (logs before the exit);
then one ``POST /v1/agent/reconcile`` lists them all and the server answers per run: continue
(supervise it as if it had been started here), kill (cancelled / timed_out: stop and report;
fenced: stop and forget) or forget. A run the server does not want is never left running.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from gpufleet.agent.job_run import Run, wait_or_stop
from gpufleet.agent.runtime import UnknownJobError
from gpufleet.agent.server_api import Refused, ServerUnreachable
from gpufleet.schemas.execution import ReconcileDecisionOut, ReconcileEntryIn, ReconcileIn, ReconcileOutcomeIn

if TYPE_CHECKING:
    from gpufleet.agent.jobs import JobRunner

log = logging.getLogger("gpufleet.agent.jobs")


async def recover(self: JobRunner) -> bool:
    """Adopt what the runtime still has, upload ended runs' logs, then reconcile with the server.

    False: stopped before the server answered.
    """
    found = await self.runtime.recover()
    for job in found:
        try:
            job_id = UUID(job.job_id)
        except ValueError:
            job_id = None
        if job_id is None or job.attempt < 1:
            log.warning("killing an unknown process group left in the runtime: %s", job.job_id)
            with contextlib.suppress(UnknownJobError):
                await self.runtime.kill_recovered(job.job_id)
                self.runtime.forget(job.job_id)
            continue
        run = Run(job_id, job.attempt, started_at=job.started_at, pid=job.pid, started_reported=True)
        run.start_settled.set()
        self.runs[run.key] = run
    if found:
        log.info("recovered %d job(s) from before the restart; reconciling with the server", len(found))
    for run in list(self.runs.values()):  # ended meanwhile: their output goes before their outcome
        if self.runtime.outcome(run.key) is not None:
            await self.pump(run)
            if run.fenced:
                await self.drop(run)
    entries = []
    for run in self.runs.values():
        outcome = self.runtime.outcome(run.key)
        entries.append(
            ReconcileEntryIn(
                job_id=run.job_id,
                attempt=run.attempt,
                alive=outcome is None,
                outcome=None
                if outcome is None
                else ReconcileOutcomeIn(
                    status=outcome.status,
                    exit_code=outcome.exit_code,
                    signal=outcome.signal,
                    reason=outcome.reason[:4000],
                ),
            )
        )
    failures = 0
    while not self._stop.is_set():
        try:
            reply = await self.api.reconcile(self.credential, ReconcileIn(jobs=entries))
            break
        except (ServerUnreachable, Refused) as exc:
            failures += 1
            delay = self.backoff(failures, getattr(exc, "retry_after", None))
            log.warning("reconcile failed (%s); retrying in %.1f s", exc, delay)
            await wait_or_stop(self._stop, delay)
    else:
        return False
    decided = {str(d.job_id): d for d in reply.decisions}
    for run in list(self.runs.values()):
        _apply(self, run, decided.get(run.key))
    if reply.lost:
        log.warning(
            "the server had %d job(s) running here that this agent did not know: %s",
            len(reply.lost),
            ", ".join(map(str, reply.lost)),
        )
    self.reconciled.set()
    return True


def _apply(self: JobRunner, run: Run, decision: ReconcileDecisionOut | None) -> None:
    if decision is not None and decision.attempt != run.attempt:
        decision = None
    action = "continue" if decision is None else decision.action
    if action == "forget":
        run.fenced = True
        run.task = self.spawn(self.drop(run))
        return
    if action == "kill" and decision is not None:
        if decision.reason in ("cancelled", "timed_out"):
            self.terminate(run, decision.reason, decision.grace_s)
        else:
            run.fenced = True
            self.terminate(run, "cancelled", decision.grace_s)
    run.task = self.spawn(self.supervise(run, None))
