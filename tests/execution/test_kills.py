"""Cancel and timeouts: kill instructions by the database clock, and the reaper's double check."""

from __future__ import annotations

from uuid import uuid4

import pytest

from gpufleet.background import reaper
from gpufleet.db.pool import Database
from gpufleet.domain.execution import ExitReport, KillInstruction
from gpufleet.errors import StaleAttempt
from gpufleet.services import jobs as jobs_service
from gpufleet.services import reports
from gpufleet.services.assignments import kill_instructions
from tests.execution.helpers import OK, POLICY, add_host, assert_clean, event_types, fleet, job, place, running, sql
from tests.factories import ctx_for
from tests.scheduling.helpers import settings

SETTINGS = settings(cancel_grace_s=30, kill_report_margin_s=30)


async def test_cancel_of_a_running_job_kill_instruction_then_exit_report(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    keep = await running(db, org.id, host)
    assert await kill_instructions(db, host, [(job_id, 1), (keep, 1)], policy=POLICY) == []
    await jobs_service.cancel(db, ctx_for(org.id), job_id)
    assert await kill_instructions(db, host, [(job_id, 1), (keep, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "cancelled", 30.0)
    ]
    assert (await job(db, job_id))["status"] == "running"  # the process still runs until the agent stops it
    stopped = ExitReport("cancelled", None, 15, "cancelled; stopped by signal 15 (SIGTERM)")
    done = await reports.report_exit(db, host, job_id, 1, stopped)
    assert done.status == "cancelled" and (await job(db, job_id))["exit_signal"] == 15
    assert await event_types(db, job_id) == [
        "job.submitted", "job.allocated", "job.running", "job.cancel_requested", "job.cancelled",
    ]  # fmt: skip
    assert (await reaper.run_once(db, SETTINGS)).cancelled == []
    await assert_clean(db)


async def test_a_silent_agent_cancel_is_finished_by_the_server(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await jobs_service.cancel(db, ctx_for(org.id), job_id)
    await sql(db, "update jobs set cancel_requested_at = now() - interval '59 seconds' where id = $1", job_id)
    assert (await reaper.run_once(db, SETTINGS)).cancelled == []  # grace + margin not yet over
    await sql(db, "update jobs set cancel_requested_at = now() - interval '61 seconds' where id = $1", job_id)
    result = await reaper.run_once(db, SETTINGS)
    assert result.cancelled == [job_id]
    row = await job(db, job_id)
    assert row["status"] == "cancelled" and "did not confirm" in row["status_reason"]
    await assert_clean(db)  # its GPUs are free again
    # the agent comes back: still told to kill it; its late report changes nothing
    assert await kill_instructions(db, host, [(job_id, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "cancelled", 30.0)
    ]
    stopped = ExitReport("cancelled", None, 9, "cancelled; killed by SIGKILL after a 30 s grace period")
    events_before = await event_types(db, job_id)
    assert (await reports.report_exit(db, host, job_id, 1, stopped)).status == "cancelled"
    with pytest.raises(StaleAttempt):
        await reports.report_exit(db, host, job_id, 1, OK)
    assert await event_types(db, job_id) == events_before


async def test_timeout_by_the_database_clock(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, max_runtime_s=60)
    unlimited = await running(db, org.id, host)
    await sql(db, "update jobs set started_at = now() - interval '59 seconds' where id = $1", job_id)
    assert await kill_instructions(db, host, [(job_id, 1)], policy=POLICY) == []
    await sql(db, "update jobs set started_at = now() - interval '3600 seconds'")
    assert await kill_instructions(db, host, [(job_id, 1), (unlimited, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "timed_out", 30.0)
    ]
    out = ExitReport("timed_out", None, 15, "timed out; stopped by signal 15 (SIGTERM)")
    assert (await reports.report_exit(db, host, job_id, 1, out)).status == "timed_out"
    assert (await job(db, unlimited))["status"] == "running"
    await assert_clean(db)


async def test_a_silent_agent_timeout_is_finished_by_the_server(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, max_runtime_s=60)
    await sql(db, "update jobs set started_at = now() - interval '119 seconds' where id = $1", job_id)
    assert (await reaper.run_once(db, SETTINGS)).timed_out == []
    await sql(db, "update jobs set started_at = now() - interval '121 seconds' where id = $1", job_id)
    assert (await reaper.run_once(db, SETTINGS)).timed_out == [job_id]
    assert (await job(db, job_id))["status"] == "timed_out"
    assert await kill_instructions(db, host, [(job_id, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "timed_out", 30.0)
    ]
    await assert_clean(db)


async def test_fencing_in_kill_instructions(db: Database) -> None:
    org, (host,) = await fleet(db)
    other = await add_host(db, org.id, "node-2")
    stranger_org, (stranger,) = await fleet(db, "node-x")
    job_id = await running(db, org.id, host)
    allocated = await place(db, org.id)
    foreign = await running(db, stranger_org.id, stranger)
    unknown = uuid4()
    fenced = await kill_instructions(
        db, host, [(job_id, 1), (job_id, 2), (allocated, 1), (foreign, 1), (unknown, 1)], policy=POLICY
    )
    assert fenced == [
        KillInstruction(job_id, 2, "fenced", POLICY.fence_grace_s),
        KillInstruction(foreign, 1, "fenced", POLICY.fence_grace_s),
        KillInstruction(unknown, 1, "fenced", POLICY.fence_grace_s),
    ]
    assert await kill_instructions(db, other, [(job_id, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "fenced", POLICY.fence_grace_s)
    ]
    await reports.report_exit(db, host, job_id, 1, OK)
    assert await kill_instructions(db, host, [(job_id, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "fenced", POLICY.fence_grace_s)
    ]
