"""Which runs an agent must stop, judged by the database's view of each (job, attempt).

``judge`` decides for the heartbeat reply and the reports' fencing; ``pushed`` picks, among its
instructions, the ones that the assignment long-poll delivers at once (a cancel, or a run moved
off its host), the others waiting for the heartbeat. Pure functions: the wake-up hub judges with
them too, so it wakes a waiting host exactly when its reply would carry an instruction.
"""

from __future__ import annotations

from uuid import UUID

from gpufleet.domain.execution import ExecutionPolicy, KillInstruction
from gpufleet.domain.jobs import JobStatus
from gpufleet.repo.execution import RunState

DEFAULT_POLICY = ExecutionPolicy()


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


def pushed(
    state: RunState | None, host_id: UUID, job_id: UUID, attempt: int, policy: ExecutionPolicy = DEFAULT_POLICY
) -> KillInstruction | None:
    """``judge``'s instruction if the long-poll delivers it at once: ``cancelled``, or ``fenced``
    because the attempt is not this host's (requeued, moved, unknown). A timeout (the agent keeps
    its own clock) and a run the host itself ended wait for the heartbeat."""
    order = judge(state, host_id, job_id, attempt, policy)
    if order is None or order.reason == "cancelled":
        return order
    if order.reason == "fenced" and (state is None or state.host_id != host_id or state.attempt != attempt):
        return order
    return None
