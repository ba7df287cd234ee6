"""An attempt its host stopped (agent shutdown, reboot) is ``interrupted``: never a failure of the job
nor a cancel nobody asked for. Requeued per the host-loss policy, else failed saying so."""

from __future__ import annotations

from gpufleet.db.pool import Database
from gpufleet.domain.execution import ExitReport
from gpufleet.services import jobs as jobs_service
from gpufleet.services import reports
from tests.execution.helpers import assert_clean, events, fleet, job, running
from tests.factories import ctx_for

STOPPED = ExitReport("interrupted", None, 15, "interrupted: the agent stopped; stopped by signal 15 (SIGTERM)")


async def test_an_interrupted_attempt_is_requeued_per_the_host_loss_policy(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)  # retry_on_host_loss and 3 attempts: the defaults
    requeued = await reports.report_exit(db, host, job_id, 1, STOPPED)
    assert (requeued.status, requeued.attempt, requeued.host_id) == ("pending", 2, None)
    kind, data = (await events(db, job_id))[-1]
    assert kind == "job.requeued" and data["cause"] == "host_stopped" and data["previous_attempt"] == 1
    row = await job(db, job_id)
    assert row["status_reason"] == f"attempt 1 {STOPPED.reason}"
    async with db.system_transaction() as conn:
        outcome = await conn.fetchval("select outcome from job_attempts where job_id = $1 and attempt = 1", job_id)
    assert outcome == "interrupted"
    assert (await reports.report_exit(db, host, job_id, 1, STOPPED)).attempt == 2  # a resend is recognised
    await assert_clean(db)


async def test_without_retries_left_it_fails_saying_its_host_stopped_it(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, retry_on_host_loss=False)
    ended = await reports.report_exit(db, host, job_id, 1, STOPPED)
    assert ended.status == "failed" and ended.status_reason == STOPPED.reason
    assert "cancelled" not in (ended.status_reason or "")
    kind, data = (await events(db, job_id))[-1]
    assert kind == "job.failed" and data["cause"] == "host_stopped"
    last = await running(db, org.id, host, max_attempts=1)
    assert (await reports.report_exit(db, host, last, 1, STOPPED)).status == "failed"
    await assert_clean(db)


async def test_a_cancel_requested_meanwhile_wins(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await jobs_service.cancel(db, ctx_for(org.id), job_id)
    assert (await reports.report_exit(db, host, job_id, 1, STOPPED)).status == "cancelled"
    await assert_clean(db)
