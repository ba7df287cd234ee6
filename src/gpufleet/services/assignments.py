"""What an agent should run and what it must stop: assignment long-poll and kill instructions.

An assignment is a job ``allocated`` on the agent's host; it is delivered again on every poll
until the agent reports it started (or it is cancelled, or moved away), so a lost reply loses
nothing: the agent skips a (job, attempt) it already runs. Kill instructions go with every
heartbeat reply; fencing is judged by the database's view of each (job, attempt), its clock
included, never by the agent's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain import JobStatus
from gpufleet.errors import InvalidInput
from gpufleet.execution_domain import Assignment, ExecutionPolicy, KillInstruction
from gpufleet.hosts_domain import HostIdentity
from gpufleet.repo import execution as repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.repo.execution import RunState
from gpufleet.services.hosts import ensure_current
from gpufleet.services.wakeups import WakeHub

DEFAULT_POLICY = ExecutionPolicy()
MAX_ASSIGNMENTS = 100
MAX_RUNNING = 10_000


async def next_assignments(
    db: Database,
    identity: HostIdentity,
    *,
    wait_s: float,
    hub: WakeHub | None = None,
    policy: ExecutionPolicy = DEFAULT_POLICY,
    limit: int = MAX_ASSIGNMENTS,
) -> list[Assignment]:
    """The host's assignments now, or the first to arrive within ``wait_s`` seconds (else ``[]``).

    ``wait_s`` is capped at ``policy.assignment_poll_max_s``. With a started ``hub`` the waiter
    sleeps until the placement's NOTIFY; without one it re-reads every ``policy.poll_s``.
    """
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s) or wait_s < 0:
        raise InvalidInput("wait_s must be a number of seconds >= 0", field="wait_s")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(float(wait_s), policy.assignment_poll_max_s)
    if hub is None:
        while True:
            found = await _fetch(db, identity, limit)
            left = deadline - loop.time()
            if found or left <= 0:
                return found
            await asyncio.sleep(min(policy.poll_s, left))
    with hub.subscribe("assignments", identity.host_id) as sub:  # before the read: no lost wake-up
        while True:
            found = await _fetch(db, identity, limit)
            left = deadline - loop.time()
            if found or left <= 0 or hub.draining:  # draining: the server is stopping
                return found
            await sub.wait(left)


async def _fetch(db: Database, identity: HostIdentity, limit: int) -> list[Assignment]:
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)  # every read, so a long poll ends at a revocation
        found = await repo.assignments_for_host(conn, org_id=identity.org_id, host_id=identity.host_id, limit=limit)
        if not found:
            return found
        served = await replicas_repo.for_assignments(conn, org_id=identity.org_id, job_ids=[a.job_id for a in found])
    return [replace(a, replica=served[a.job_id]) if a.job_id in served else a for a in found]


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
    async with db.transaction(identity.org_id) as conn:
        states = await repo.run_states(conn, org_id=identity.org_id, job_ids=sorted({j for j, _ in running}))
    out = []
    for job_id, attempt in running:
        order = judge(states.get(job_id), identity.host_id, job_id, attempt, policy)
        if order is not None:
            out.append(order)
    return out


def judge(
    state: RunState | None, host_id: UUID, job_id: UUID, attempt: int, policy: ExecutionPolicy
) -> KillInstruction | None:
    """Whether the agent of ``host_id`` may keep running (job, attempt); None: it may."""
    if state is None or state.host_id != host_id or state.attempt != attempt:
        return KillInstruction(job_id, attempt, "fenced", policy.fence_grace_s)
    if state.status is JobStatus.RUNNING:
        if state.cancel_requested:
            return KillInstruction(job_id, attempt, "cancelled", policy.cancel_grace_s)
        if state.overdue:
            return KillInstruction(job_id, attempt, "timed_out", policy.cancel_grace_s)
        return None
    if state.status is JobStatus.ALLOCATED:
        return None  # started; the start report is on its way
    if state.status is JobStatus.CANCELLED:
        return KillInstruction(job_id, attempt, "cancelled", policy.cancel_grace_s)
    if state.status is JobStatus.TIMED_OUT:
        return KillInstruction(job_id, attempt, "timed_out", policy.cancel_grace_s)
    return KillInstruction(job_id, attempt, "fenced", policy.fence_grace_s)
