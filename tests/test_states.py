"""The job transition table, exhaustively, against the guarded SQL update."""

from __future__ import annotations

import itertools

import pytest

from gpufleet import states
from gpufleet.db.pool import Database
from gpufleet.domain.jobs import JobStatus
from gpufleet.errors import InvalidTransition
from gpufleet.repo import jobs as jobs_repo
from gpufleet.services.transitions import transition_job
from tests.factories import create_host, create_job, create_org

ALL = list(JobStatus)


def test_terminal_states_have_no_way_out() -> None:
    assert {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.ALLOCATION_FAILED,
    } == states.JOB_TERMINAL


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(ALL, ALL)))
def test_check_agrees_with_the_table(src: JobStatus, dst: JobStatus) -> None:
    allowed = dst in states.JOB_TRANSITIONS.get(src, frozenset())
    if allowed:
        states.check(states.JOB_TRANSITIONS, src, dst)
    else:
        with pytest.raises(InvalidTransition):
            states.check(states.JOB_TRANSITIONS, src, dst)


async def test_guarded_sql_allows_exactly_the_table(db: Database) -> None:
    org = await create_org(db)
    host, _ = await create_host(db, org.id)
    for src, dst in itertools.product(ALL, ALL):
        job = await create_job(db, org.id)
        async with db.system_transaction() as conn:
            # Put the job in `src` directly (the trigger needs a host for active states).
            await conn.execute("update jobs set status = $2, host_id = $3 where id = $1", job.id, src.value, host.id)
        async with db.transaction(org.id) as conn:
            moved = await jobs_repo.transition(
                conn,
                org_id=org.id,
                job_id=job.id,
                allowed_from=states.sources(states.JOB_TRANSITIONS, dst),
                to=dst,
                **({"host_id": host.id} if dst in (JobStatus.ALLOCATED, JobStatus.RUNNING) else {}),
            )
        allowed = dst in states.JOB_TRANSITIONS.get(src, frozenset())
        assert (moved is not None) == allowed, f"{src} -> {dst}"


async def test_transition_writes_an_event_in_the_same_transaction(db: Database) -> None:
    org = await create_org(db)
    job = await create_job(db, org.id)
    async with db.transaction(org.id) as conn:
        moved = await transition_job(conn, job, JobStatus.CANCELLED, reason="user asked", actor="test")
        assert moved.status is JobStatus.CANCELLED
        rows = await conn.fetch("select type, data from events where entity_id = $1", job.id)
    assert [(r["type"], r["data"]["reason"]) for r in rows] == [("job.cancelled", "user asked")]
    # A stale in-memory job (still "pending") cannot be cancelled twice.
    with pytest.raises(InvalidTransition):
        async with db.transaction(org.id) as conn:
            await transition_job(conn, job, JobStatus.CANCELLED)
    async with db.transaction(org.id) as conn:
        assert await conn.fetchval("select count(*) from events where entity_id = $1", job.id) == 1
