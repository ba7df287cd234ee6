"""An agent that restarted says what it knows; the server decides what continues and what is lost."""

from __future__ import annotations

from uuid import uuid4

from gpufleet.db.pool import Database
from gpufleet.domain.execution import EXIT_STATUS_LOST, PROCESS_LOST, ExitReport, ReconcileDecision, ReconcileEntry
from gpufleet.services import jobs as jobs_service
from gpufleet.services import reports
from gpufleet.services.assignments import next_assignments
from tests.execution.helpers import POLICY, assert_clean, event_types, fleet, job, place, running
from tests.factories import ctx_for


async def test_reconcile_after_an_agent_restart(db: Database) -> None:
    org, (host,) = await fleet(db, gpus=8)
    alive = await running(db, org.id, host)
    ended = await running(db, org.id, host)
    ended_unknown = await running(db, org.id, host)
    lost_fail = await running(db, org.id, host, retry_on_host_loss=False)
    lost_retry = await running(db, org.id, host)
    start_lost = await place(db, org.id)  # started, but its start report never arrived
    cancelled = await running(db, org.id, host)
    never_started = await place(db, org.id)
    await jobs_service.cancel(db, ctx_for(org.id), cancelled)
    foreign = uuid4()

    entries = [
        ReconcileEntry(alive, 1, alive=True),
        ReconcileEntry(ended, 1, alive=False, outcome=ExitReport("failed", 4, None, "exited with code 4")),
        ReconcileEntry(ended_unknown, 1, alive=False),
        ReconcileEntry(start_lost, 1, alive=True),
        ReconcileEntry(cancelled, 1, alive=True),
        ReconcileEntry(alive, 7, alive=True),  # an attempt the server never gave it
        ReconcileEntry(foreign, 1, alive=True),
    ]
    result = await reports.reconcile(db, host, entries, policy=POLICY)
    assert result.decisions == [
        ReconcileDecision(alive, 1, "continue"),
        ReconcileDecision(ended, 1, "forget"),
        ReconcileDecision(ended_unknown, 1, "forget"),
        ReconcileDecision(start_lost, 1, "continue"),
        ReconcileDecision(cancelled, 1, "kill", "cancelled", POLICY.cancel_grace_s),
        ReconcileDecision(alive, 7, "kill", "fenced", POLICY.fence_grace_s),
        ReconcileDecision(foreign, 1, "kill", "fenced", POLICY.fence_grace_s),
    ]
    assert sorted(result.lost) == sorted([lost_fail, lost_retry])
    status = {j: (await job(db, j))["status"] for j in (alive, ended, ended_unknown, start_lost, never_started)}
    assert status == {
        alive: "running",
        ended: "failed",
        ended_unknown: "failed",
        start_lost: "running",
        never_started: "allocated",
    }
    assert (await job(db, ended))["exit_code"] == 4
    assert (await job(db, ended_unknown))["status_reason"] == EXIT_STATUS_LOST
    failed = await job(db, lost_fail)
    assert (failed["status"], failed["status_reason"]) == ("failed", PROCESS_LOST)
    requeued = await job(db, lost_retry)
    assert (requeued["status"], requeued["attempt"]) == ("pending", 2)
    assert "job.running" in await event_types(db, start_lost)
    assert [a.job_id for a in await next_assignments(db, host, wait_s=0)] == [never_started]
    await assert_clean(db)

    # the same reconcile again (its reply was lost): the same decisions, nothing changes
    before = {j: await event_types(db, j) for j in (alive, ended, ended_unknown, lost_fail, lost_retry, start_lost)}
    again = await reports.reconcile(db, host, entries, policy=POLICY)
    assert again.decisions == result.decisions and again.lost == []
    assert {j: await event_types(db, j) for j in before} == before
    await assert_clean(db)


async def test_an_empty_reconcile_of_a_fresh_agent(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, max_attempts=1)
    result = await reports.reconcile(db, host, [])
    assert result.decisions == [] and result.lost == [job_id]
    assert (await job(db, job_id))["status"] == "failed"
    assert (await reports.reconcile(db, host, [])).lost == []
    await assert_clean(db)
