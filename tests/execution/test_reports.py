"""Start and exit reports: outcomes, retries, fencing of stale attempts, idempotent resends."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.execution import ExitReport
from gpufleet.errors import InvalidInput, StaleAttempt
from gpufleet.services import jobs as jobs_service
from gpufleet.services import reports
from tests.execution.helpers import (
    OK,
    add_host,
    assert_clean,
    event_types,
    events,
    fleet,
    job,
    place,
    running,
    snapshot,
)
from tests.factories import ctx_for
from tests.scheduling.helpers import scheduler


async def test_a_successful_run_and_a_resent_exit_report(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await place(db, org.id)
    started = await reports.report_started(db, host, job_id, 1, pid=77)
    assert started.status == "running" and started.started_at is not None
    assert (await reports.report_started(db, host, job_id, 1, pid=77)).status == "running"  # resent: no change
    done = await reports.report_exit(db, host, job_id, 1, OK)
    assert done.status == "succeeded" and done.exit_code == 0 and done.status_reason == "exited with code 0"
    again = await reports.report_exit(db, host, job_id, 1, OK)  # its reply was lost
    assert again.status == "succeeded"
    assert await event_types(db, job_id) == ["job.submitted", "job.allocated", "job.running", "job.succeeded"]
    (_, running_data), (_, done_data) = (await events(db, job_id))[2:]
    assert running_data["pid"] == 77 and running_data["host_id"] == str(host.host_id)
    assert done_data["exit_code"] == 0 and done_data["attempt"] == 1
    async with db.system_transaction() as conn:
        a = await conn.fetchrow("select * from job_attempts where job_id = $1", job_id)
    assert a is not None and (a["pid"], a["outcome"], a["reported_by"], a["exit_code"]) == (77, "succeeded", "agent", 0)
    with pytest.raises(StaleAttempt):  # a different outcome for a finished attempt
        await reports.report_exit(db, host, job_id, 1, ExitReport("failed", 1, None, "exited with code 1"))
    await assert_clean(db)


@pytest.mark.parametrize(
    ("outcome", "code", "signal"),
    [
        (ExitReport("failed", 3, None, "exited with code 3"), 3, None),
        (ExitReport("failed", None, 9, "killed by signal 9 (SIGKILL)"), None, 9),
    ],
    ids=["exit-code", "signal"],
)
async def test_failures_keep_code_signal_and_reason(
    db: Database, outcome: ExitReport, code: int | None, signal: int | None
) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    failed = await reports.report_exit(db, host, job_id, 1, outcome)
    row = await job(db, job_id)
    assert failed.status == "failed" and (row["exit_code"], row["exit_signal"]) == (code, signal)
    assert row["status_reason"] == outcome.reason and row["finished_at"] is not None
    await assert_clean(db)


async def test_a_start_failure_fails_the_allocated_job_without_running_it(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await place(db, org.id)
    failed = await reports.report_exit(
        db, host, job_id, 1, ExitReport("failed", None, None, "executable not found: foo")
    )
    assert failed.status == "failed" and failed.status_reason == "executable not found: foo"
    assert await event_types(db, job_id) == ["job.submitted", "job.allocated", "job.failed"]
    await assert_clean(db)


async def test_an_exit_whose_start_report_was_lost_still_records_the_run(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await place(db, org.id)
    done = await reports.report_exit(db, host, job_id, 1, OK)
    assert done.status == "succeeded"
    assert await event_types(db, job_id) == ["job.submitted", "job.allocated", "job.running", "job.succeeded"]
    await assert_clean(db)


async def test_stale_reports_are_refused_and_change_nothing(db: Database) -> None:
    org, (host,) = await fleet(db)
    other = await add_host(db, org.id, "node-2")
    _, (stranger,) = await fleet(db, "node-x")
    job_id = await running(db, org.id, host)
    before = await snapshot(db)
    attempts: list[tuple[object, UUID, int]] = [
        (other, job_id, 1),  # not on that host
        (host, job_id, 2),  # not the current attempt
        (stranger, job_id, 1),  # another tenant's job: never even NotFound
        (host, uuid4(), 1),  # no such job
    ]
    for who, jid, attempt in attempts:
        with pytest.raises(StaleAttempt) as err:
            await reports.report_exit(db, who, jid, attempt, OK)  # type: ignore[arg-type]
        assert err.value.status == 409
        with pytest.raises(StaleAttempt):
            await reports.report_started(db, who, jid, attempt)  # type: ignore[arg-type]
    assert await snapshot(db) == before
    await reports.report_exit(db, host, job_id, 1, ExitReport("failed", 1, None, "exited with code 1"))
    before = await snapshot(db)
    with pytest.raises(StaleAttempt):  # finished: a late start report cannot revive it
        await reports.report_started(db, host, job_id, 1)
    assert await snapshot(db) == before
    await assert_clean(db)


async def test_malformed_reports_are_invalid_input(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    with pytest.raises(InvalidInput):
        await reports.report_exit(db, host, job_id, 0, OK)
    with pytest.raises(InvalidInput):
        await reports.report_exit(db, host, job_id, 1, ExitReport("exploded"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await reports.report_started(db, host, job_id, 1, pid=-5)


async def test_retry_on_failure_requeues_as_the_next_attempt_until_attempts_run_out(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, retry_on_failure=True, max_attempts=2)
    bad = ExitReport("failed", 2, None, "exited with code 2")
    requeued = await reports.report_exit(db, host, job_id, 1, bad)
    assert (requeued.status, requeued.attempt, requeued.host_id) == ("pending", 2, None)
    kind, data = (await events(db, job_id))[-1]
    assert kind == "job.requeued" and data["cause"] == "failed" and data["previous_attempt"] == 1
    assert data["attempt"] == 2 and data["exit_code"] == 2
    await assert_clean(db)
    assert (await reports.report_exit(db, host, job_id, 1, bad)).attempt == 2  # resent: recognised
    with pytest.raises(StaleAttempt):
        await reports.report_started(db, host, job_id, 1)
    count = len(await events(db, job_id))

    await scheduler(db).run_once()
    await reports.report_started(db, host, job_id, 2)
    final = await reports.report_exit(db, host, job_id, 2, bad)
    assert (final.status, final.attempt) == ("failed", 2)  # max_attempts reached
    assert len(await events(db, job_id)) == count + 3  # allocated, running, failed
    await assert_clean(db)


async def test_a_cancelled_outcome_needs_a_cancel_request(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    stopped = ExitReport("cancelled", None, 15, "cancelled; stopped by signal 15 (SIGTERM)")
    assert (await reports.report_exit(db, host, job_id, 1, stopped)).status == "failed"  # nobody asked
    other = await running(db, org.id, host)
    await jobs_service.cancel(db, ctx_for(org.id), other)
    assert (await reports.report_exit(db, host, other, 1, stopped)).status == "cancelled"
    await assert_clean(db)


async def test_nothing_is_lost_when_the_server_restarts_between_reports(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await db.close()
    await db.open()
    assert (await reports.report_exit(db, host, job_id, 1, OK)).status == "succeeded"
    await assert_clean(db)
