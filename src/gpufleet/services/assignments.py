"""What an agent should run and what it must stop: assignment long-poll and kill instructions.

An assignment is a job ``allocated`` on the agent's host; it is delivered again on every poll
until the agent reports it started (or it is cancelled, or moved away), so a lost reply loses
nothing: the agent skips a (job, attempt) it already runs. Kill instructions go with every
heartbeat reply, and a cancel or a fence also ends the host's long-poll at once; fencing is
judged by the database's view of each (job, attempt), its clock included, never by the agent's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.execution import Assignment, ExecutionPolicy, KillInstruction
from gpufleet.domain.hosts import HostIdentity
from gpufleet.errors import InvalidInput
from gpufleet.repo import execution as repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.services.hosts import ensure_current
from gpufleet.services.stops import DEFAULT_POLICY, judge, pushed
from gpufleet.services.wakeups import WakeHub

__all__ = ["DEFAULT_POLICY", "Work", "judge", "kill_instructions", "next_assignments", "next_work"]

MAX_ASSIGNMENTS = 100
MAX_RUNNING = 10_000


@dataclass(frozen=True, slots=True)
class Work:
    """A long-poll's answer: runs to start, and runs to stop now (``pushed`` instructions)."""

    assignments: list[Assignment]
    kill: list[KillInstruction] = field(default_factory=list)


async def next_assignments(
    db: Database,
    identity: HostIdentity,
    *,
    wait_s: float,
    hub: WakeHub | None = None,
    policy: ExecutionPolicy = DEFAULT_POLICY,
    limit: int = MAX_ASSIGNMENTS,
) -> list[Assignment]:
    """The host's assignments now, or the first to arrive within ``wait_s`` seconds (else ``[]``)."""
    work = await next_work(db, identity, wait_s=wait_s, hub=hub, policy=policy, limit=limit)
    return work.assignments


async def next_work(
    db: Database,
    identity: HostIdentity,
    *,
    wait_s: float,
    running: Sequence[tuple[UUID, int]] = (),
    hub: WakeHub | None = None,
    policy: ExecutionPolicy = DEFAULT_POLICY,
    limit: int = MAX_ASSIGNMENTS,
) -> Work:
    """The host's assignments and the stops due for ``running`` now, or the first of either to
    arrive within ``wait_s`` seconds (else nothing).

    ``running``: the (job, attempt)s the agent runs and is not already stopping; a cancel or a
    fence of one of them ends the wait (``pushed``: the heartbeat's instruction, sooner).
    ``wait_s`` is capped at ``policy.assignment_poll_max_s``. With a started ``hub`` the waiter
    sleeps until a NOTIFY concerns it; without one it re-reads every ``policy.poll_s``.
    """
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s) or wait_s < 0:
        raise InvalidInput("wait_s must be a number of seconds >= 0", field="wait_s")
    if len(running) > MAX_RUNNING:
        raise InvalidInput(f"at most {MAX_RUNNING} running jobs per poll", field="running")
    running = list(running)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(float(wait_s), policy.assignment_poll_max_s)
    if hub is None:
        while True:
            work = await _fetch(db, identity, limit, running, policy)
            left = deadline - loop.time()
            if work.assignments or work.kill or left <= 0:
                return work
            await asyncio.sleep(min(policy.poll_s, left))
    with hub.subscribe("assignments", identity.host_id, running=running) as sub:  # before the read
        while True:
            work = await _fetch(db, identity, limit, running, policy)
            left = deadline - loop.time()
            if work.assignments or work.kill or left <= 0 or hub.draining:  # draining: the server is stopping
                return work
            await sub.wait(left)


async def _fetch(
    db: Database, identity: HostIdentity, limit: int, running: Sequence[tuple[UUID, int]], policy: ExecutionPolicy
) -> Work:
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)  # every read, so a long poll ends at a revocation
        found = await repo.assignments_for_host(conn, org_id=identity.org_id, host_id=identity.host_id, limit=limit)
        states = (
            await repo.run_states(conn, org_id=identity.org_id, job_ids=sorted({j for j, _ in running}))
            if running
            else {}
        )
        served = (
            await replicas_repo.for_assignments(conn, org_id=identity.org_id, job_ids=[a.job_id for a in found])
            if found
            else {}
        )
    kill = [
        order
        for job_id, attempt in running
        if (order := pushed(states.get(job_id), identity.host_id, job_id, attempt, policy)) is not None
    ]
    return Work([replace(a, replica=served[a.job_id]) if a.job_id in served else a for a in found], kill)


async def kill_instructions(
    db: Database,
    identity: HostIdentity,
    running: Sequence[tuple[UUID, int]],
    *,
    policy: ExecutionPolicy = DEFAULT_POLICY,
) -> list[KillInstruction]:
    """For the heartbeat reply: which of the (job, attempt)s the agent runs it must stop, and why.

    * ``cancelled``: a cancel was requested (or the server already ended the job as cancelled);
    * ``timed_out``: running past ``max_runtime_s`` by the database clock (or already ended so);
    * ``fenced``: not the job's current attempt on this host (requeued elsewhere, another
      tenant's or unknown job, or ended by the server): it must not run, with a short grace.

    Read-only. The agent kills, then reports the exit (a fenced attempt's report gets 409).
    """
    if len(running) > MAX_RUNNING:
        raise InvalidInput(f"at most {MAX_RUNNING} running jobs per report", field="running")
    if not running:
        return []
    async with db.flat_transaction(identity.org_id) as conn:  # on every heartbeat of a busy host: no reset
        states = await repo.run_states(conn, org_id=identity.org_id, job_ids=sorted({j for j, _ in running}))
    out = []
    for job_id, attempt in running:
        order = judge(states.get(job_id), identity.host_id, job_id, attempt, policy)
        if order is not None:
            out.append(order)
    return out
