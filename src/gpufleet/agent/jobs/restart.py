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

from gpufleet.agent.jobs.run import Run, wait_or_stop
from gpufleet.agent.processes.runtime import UnknownJobError
from gpufleet.agent.server_api import Refused, ServerUnreachable
from gpufleet.schemas.execution import ReconcileDecisionOut, ReconcileEntryIn, ReconcileIn, ReconcileOutcomeIn

if TYPE_CHECKING:
    from gpufleet.agent.jobs.runner import JobRunner

log = logging.getLogger("gpufleet.agent.jobs.runner")


async def recover(runner: JobRunner) -> bool:
    """Adopt what the runtime still has, upload ended runs' logs, then reconcile with the server.

    False: stopped before the server answered.
    """
    found = await runner.runtime.recover()
    for job in found:
        try:
            job_id = UUID(job.job_id)
        except ValueError:
            job_id = None
        if job_id is None or job.attempt < 1:
            log.warning("killing an unknown process group left in the runtime: %s", job.job_id)
            with contextlib.suppress(UnknownJobError):
                await runner.runtime.kill_recovered(job.job_id)
                runner.runtime.forget(job.job_id)
            continue
        run = Run(job_id, job.attempt, started_at=job.started_at, pid=job.pid, started_reported=True)
        run.start_settled.set()
        runner.runs[run.key] = run
    if found:
        log.info("recovered %d job(s) from before the restart; reconciling with the server", len(found))
    for run in list(runner.runs.values()):  # ended meanwhile: their output goes before their outcome
        if runner.runtime.outcome(run.key) is not None:
            await runner.pump(run)
            if run.fenced:
                await runner.drop(run)
    entries = []
    for run in runner.runs.values():
        outcome = runner.runtime.outcome(run.key)
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
    while not runner._stop.is_set():
        try:
            reply = await runner.api.reconcile(runner.credential, ReconcileIn(jobs=entries))
            break
        except (ServerUnreachable, Refused) as exc:
            failures += 1
            delay = runner.backoff(failures, getattr(exc, "retry_after", None))
            log.warning("reconcile failed (%s); retrying in %.1f s", exc, delay)
            await wait_or_stop(runner._stop, delay)
    else:
        return False
    decided = {str(d.job_id): d for d in reply.decisions}
    for run in list(runner.runs.values()):
        _apply(runner, run, decided.get(run.key))
    if reply.lost:
        log.warning(
            "the server had %d job(s) running here that this agent did not know: %s",
            len(reply.lost),
            ", ".join(map(str, reply.lost)),
        )
    runner.reconciled.set()
    return True


def _apply(runner: JobRunner, run: Run, decision: ReconcileDecisionOut | None) -> None:
    if decision is not None and decision.attempt != run.attempt:
        decision = None
    action = "continue" if decision is None else decision.action
    if action == "forget":
        run.fenced = True
        run.task = runner.spawn(runner.drop(run))
        return
    if action == "kill" and decision is not None:
        if decision.reason in ("cancelled", "timed_out"):
            runner.terminate(run, decision.reason, decision.grace_s)
        else:
            run.fenced = True
            runner.terminate(run, "cancelled", decision.grace_s)
    run.task = runner.spawn(runner.supervise(run, None))
