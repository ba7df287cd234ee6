"""Host loss: requeue after the grace period, the rate limit, and fencing when the host comes back."""

from __future__ import annotations

from uuid import UUID

import pytest

from gpufleet.background import reaper
from gpufleet.db.pool import Database
from gpufleet.domain.execution import KillInstruction, LogChunkIn
from gpufleet.domain.hosts import HostIdentity
from gpufleet.errors import StaleAttempt
from gpufleet.repo import execution as reaper_repo
from gpufleet.services import logs, reports
from gpufleet.services.assignments import kill_instructions, next_assignments
from gpufleet.services.heartbeats import heartbeat
from gpufleet.services.jobs import cancel
from tests.execution.helpers import (
    OK,
    POLICY,
    add_host,
    assert_clean,
    events,
    fleet,
    job,
    place,
    running,
    snapshot,
    sql,
)
from tests.factories import ctx_for
from tests.hosts.helpers import gpus, report
from tests.scheduling.helpers import scheduler, settings

SETTINGS = settings(host_loss_grace_s=60, requeue_rate_per_minute=100)


async def lose(db: Database, host: HostIdentity, seconds: int) -> None:
    """The host went unreachable ``seconds`` ago (as the liveness sweep would have marked it)."""
    await sql(db, "update hosts set status = 'unreachable' where id = $1", host.host_id)
    await sql(
        db,
        "update hosts set unreachable_since = now() - make_interval(secs => $2) where id = $1",
        host.host_id,
        seconds,
    )


async def test_requeue_replacement_and_fencing_of_the_old_attempt(db: Database) -> None:
    org, (old,) = await fleet(db, "node-1", gpus=2)
    job_id = await running(db, org.id, old, gpu_count=2)
    new = await add_host(db, org.id, "node-2", gpus=2)
    await logs.append_logs(db, old, job_id, 1, [LogChunkIn(1, "stdout", 0, b"before the partition\n")])

    await lose(db, old, 59)
    assert (await reaper.run_once(db, SETTINGS)).requeued == []  # still within the grace period
    await lose(db, old, 61)
    result = await reaper.run_once(db, SETTINGS)
    assert result.requeued == [job_id]
    row = await job(db, job_id)
    assert (row["status"], row["attempt"], row["host_id"]) == ("pending", 2, None)
    assert row["status_reason"].startswith("host_lost: host node-1 unreachable for")
    kind, data = (await events(db, job_id))[-1]
    assert kind == "job.requeued" and data["cause"] == "host_lost" and data["previous_attempt"] == 1
    await assert_clean(db)

    await scheduler(db).run_once()
    (assignment,) = await next_assignments(db, new, wait_s=0)
    assert (assignment.job_id, assignment.attempt) == (job_id, 2)
    await reports.report_started(db, new, job_id, 2)

    # The old host comes back: told to kill its attempt; nothing it says about it counts.
    await heartbeat(db, old, report(gpus(2, host="node-1")))
    assert await kill_instructions(db, old, [(job_id, 1)], policy=POLICY) == [
        KillInstruction(job_id, 1, "fenced", POLICY.fence_grace_s)
    ]
    assert await kill_instructions(db, new, [(job_id, 2)], policy=POLICY) == []
    before = await snapshot(db)
    with pytest.raises(StaleAttempt):
        await reports.report_exit(db, old, job_id, 1, OK)
    with pytest.raises(StaleAttempt):
        await reports.report_started(db, old, job_id, 1)
    with pytest.raises(StaleAttempt):
        await logs.append_logs(db, old, job_id, 1, [LogChunkIn(2, "stdout", 21, b"after\n")])
    assert await snapshot(db) == before
    assert (await job(db, job_id))["status"] == "running"  # on the new host only

    assert (await reports.report_exit(db, new, job_id, 2, OK)).status == "succeeded"
    await assert_clean(db)


async def test_without_retry_or_attempts_the_job_fails_and_a_pending_cancel_wins(db: Database) -> None:
    org, (host,) = await fleet(db, gpus=4)
    no_retry = await running(db, org.id, host, retry_on_host_loss=False)
    last_attempt = await running(db, org.id, host, max_attempts=1)
    cancelling = await running(db, org.id, host)
    allocated = await place(db, org.id)
    await cancel(db, ctx_for(org.id), cancelling)
    await lose(db, host, 120)
    result = await reaper.run_once(db, SETTINGS)
    assert sorted(result.failed) == sorted([no_retry, last_attempt])
    assert result.cancelled == [cancelling] and result.requeued == [allocated]
    for job_id in (no_retry, last_attempt):
        row = await job(db, job_id)
        assert row["status"] == "failed" and row["status_reason"].startswith("host_lost")
    assert (await job(db, cancelling))["status"] == "cancelled"
    assert (await job(db, allocated))["attempt"] == 2
    await assert_clean(db)
    async with db.system_transaction() as conn:
        outcomes = await conn.fetch("select job_id, outcome, reported_by from job_attempts where attempt = 1")
    assert {r["reported_by"] for r in outcomes} == {"server"} and len(outcomes) == 4


async def _requeued_count(db: Database, org_id: UUID) -> int:
    async with db.system_transaction() as conn:
        return int(
            await conn.fetchval(
                "select count(*) from events where organization_id = $1 and type = 'job.requeued'", org_id
            )
        )


async def test_requeues_are_rate_limited_per_organization(db: Database) -> None:
    org, (host,) = await fleet(db, gpus=5)
    other_org, (other_host,) = await fleet(db, "node-x", gpus=1)
    jobs = [await running(db, org.id, host) for _ in range(5)]
    other_job = await running(db, other_org.id, other_host)
    await lose(db, host, 120)
    await lose(db, other_host, 120)
    limited = settings(host_loss_grace_s=60, requeue_rate_per_minute=2)

    first = await reaper.run_once(db, limited)
    assert len(first.requeued) == 3 and first.deferred == 3  # 2 of this org, 1 of the other
    assert other_job in first.requeued
    assert await _requeued_count(db, org.id) == 2
    second = await reaper.run_once(db, limited)
    assert second.requeued == [] and second.deferred == 3  # the minute is not over
    await assert_clean(db)

    await sql(db, "update events set created_at = now() - interval '61 seconds' where type = 'job.requeued'")
    third = await reaper.run_once(db, limited)
    assert len(third.requeued) == 2 and third.deferred == 1
    await sql(db, "update events set created_at = now() - interval '61 seconds' where type = 'job.requeued'")
    assert len((await reaper.run_once(db, limited)).requeued) == 1
    assert {(await job(db, j))["status"] for j in jobs} == {"pending"}
    await assert_clean(db)


async def test_a_host_back_within_the_grace_keeps_its_work(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await lose(db, host, 30)
    await heartbeat(db, host, report(gpus(4, host="node-1")))
    async with db.system_transaction() as conn:
        since = await conn.fetchval("select unreachable_since from hosts where id = $1", host.host_id)
    assert since is None
    assert (await reaper.run_once(db, SETTINGS)).requeued == []
    assert await kill_instructions(db, host, [(job_id, 1)], policy=POLICY) == []
    assert (await reports.report_exit(db, host, job_id, 1, OK)).status == "succeeded"


async def test_the_grace_restarts_after_a_control_plane_outage(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await lose(db, host, 600)
    # No replica ran a pass for two minutes (all down, or the database unreachable): the host
    # could not have reached anyone either, so it gets the whole grace from now on.
    await sql(
        db,
        """insert into control_plane_clock (id, last_pass_at, resumed_at)
           values (true, now() - interval '2 minutes', '-infinity')
           on conflict (id) do update set last_pass_at = excluded.last_pass_at""",
    )
    assert (await reaper.run_once(db, SETTINGS)).requeued == []
    await sql(db, "update control_plane_clock set resumed_at = now() - interval '59 seconds'")
    assert (await reaper.run_once(db, SETTINGS)).requeued == []
    await sql(db, "update control_plane_clock set resumed_at = now() - interval '61 seconds'")
    assert (await reaper.run_once(db, SETTINGS)).requeued == [job_id]
    await assert_clean(db)


async def test_one_reaper_at_a_time(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await lose(db, host, 120)
    async with db.system_transaction() as conn:
        await conn.execute("select pg_advisory_xact_lock($1)", reaper_repo.REAPER_LOCK)
        assert (await reaper.run_once(db, SETTINGS)).skipped
    assert (await reaper.run_once(db, SETTINGS)).requeued == [job_id]
