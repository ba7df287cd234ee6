"""The autoscaler's decision for one deployment: a pure function of what runs and what waits.

Given the deployment's bounds, its live replicas (version, release, status, load, idle time) and
its queue per version, it says which replicas to start (by version) and which to drain:

* **Scale up** the current version to cover its queue and in-flight work (``concurrency`` each),
  at least ``min_replicas``, at most ``max_replicas``. A queue with no replica that can serve it is
  a cold start (at once); beyond that, a queue must be ``scale_up_after_s`` old before more start.
* **Rolling update**: replicas of an older release are replaced one at a time: a new one starts
  (one replica over ``max_replicas`` is allowed meanwhile), and each time one is ready an old one
  is drained, while the old and new ready ones together exceed what the demand needs.
* **Other versions**: predictions pinned to a version nothing serves start one replica of it.
* **Scale down**: a ready replica idle (nothing claimed or finished) for ``idle_timeout_s`` with
  nothing in flight is drained, keeping ``min_replicas`` of the current release (0: scale to zero)
  and as many as its queue needs.
* Never drain the last replica that can serve a version with queued predictions.
* While the deployment backs off after crashes, nothing starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from gpufleet.domain.predictions import ReplicaStatus, replicas_for

R = ReplicaStatus


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    id: UUID
    version_id: UUID
    release: int
    status: ReplicaStatus
    in_flight: int = 0
    idle_s: float = 0.0  # since its last claim or completion (the database clock)


@dataclass(frozen=True, slots=True)
class Queue:
    depth: int
    oldest_s: float


@dataclass(frozen=True, slots=True)
class ScaleInput:
    version_id: UUID  # the deployment's current version
    release: int
    min_replicas: int
    max_replicas: int
    idle_timeout_s: float
    concurrency: int
    replicas: tuple[ReplicaLoad, ...] = ()
    queues: Mapping[UUID, Queue] = field(default_factory=dict)  # per version: what waits
    backing_off: bool = False


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    start: tuple[UUID, ...] = ()  # one version id per replica to start
    drain: tuple[UUID, ...] = ()  # replica ids
    reasons: tuple[str, ...] = ()

    @property
    def idle(self) -> bool:
        return not (self.start or self.drain)


def decide(s: ScaleInput, *, scale_up_after_s: float = 1.0) -> ScaleDecision:
    v, rel = s.version_id, s.release
    active = [r for r in s.replicas if r.status in (R.STARTING, R.READY)]
    current = [r for r in active if r.version_id == v and r.release == rel]
    old = [r for r in active if r.release < rel]
    serving = [r for r in active if r.version_id == v]  # older releases of the same version serve it too
    queue = s.queues.get(v, Queue(0, 0.0))
    starts: list[UUID] = []
    drains: list[UUID] = []
    why: list[str] = []

    need = replicas_for(queue.depth, sum(r.in_flight for r in serving), s.concurrency) if queue.depth else 0
    target = min(max(need, s.min_replicas), s.max_replicas)

    # Rolling update: drain the old replicas that the ready new ones make unneeded.
    ready_new = [r for r in current if r.status is R.READY]
    if old and ready_new:
        k = min(len(old), len(ready_new) + len(old) - max(target, 1))
        for r in sorted(old, key=lambda r: (r.in_flight, -r.idle_s, str(r.id)))[: max(0, k)]:
            if _may_drain(r, active, drains, s.queues):
                drains.append(r.id)
                why.append(f"replica {r.id} replaced by release {rel}")
    old = [r for r in old if r.id not in drains]

    if not s.backing_off:
        # Replicas of older releases keep their capacity until new ones take over (a surge of one).
        cap = max(0, s.max_replicas + (1 if old else 0) - len(current) - len(old))
        up = max(0, s.min_replicas - len(current))
        if up:
            why.append(f"below min_replicas ({len(current)} of {s.min_replicas})")
        if queue.depth and not serving:
            up = max(up, max(1, target))
            why.append(f"cold start: {queue.depth} queued, no replica of the current version")
        elif queue.depth and queue.oldest_s >= scale_up_after_s and len(serving) < target:
            up = max(up, target - len(serving))
            why.append(f"{queue.depth} queued for {queue.oldest_s:.1f} s: {len(serving)} of {target} replicas needed")
        up = min(up, cap)
        starts += [v] * up
        rolling = old and not up and not any(r.status is R.STARTING for r in current)
        if rolling and len(current) < max(target, 1) and len(current) + len(old) <= s.max_replicas:
            starts.append(v)
            why.append(f"rolling update to release {rel}: {len(old)} replica(s) of older releases left")
        # Pinned versions nothing serves: one replica each (outside max_replicas).
        live_versions = {r.version_id for r in active}
        for version, q in sorted(s.queues.items(), key=lambda kv: str(kv[0])):
            if version != v and q.depth and version not in live_versions:
                starts.append(version)
                why.append(f"{q.depth} queued for another version, nothing serves it")

    # Idle replicas beyond the minimum.
    idle = [
        r
        for r in active
        if r.status is R.READY and r.in_flight == 0 and r.idle_s >= s.idle_timeout_s and r.id not in drains
    ]
    spare = len(current) - max(s.min_replicas, target)  # what the queue still needs stays too
    for r in sorted(idle, key=lambda r: (-r.idle_s, str(r.id))):
        is_current = r.version_id == v and r.release == rel
        if is_current and spare <= 0:
            continue
        if _may_drain(r, active, drains, s.queues):
            drains.append(r.id)
            spare -= 1 if is_current else 0
            why.append(f"replica {r.id} idle for {r.idle_s:.0f} s")
    return ScaleDecision(tuple(starts), tuple(drains), tuple(why))


def _may_drain(r: ReplicaLoad, active: list[ReplicaLoad], drains: list[UUID], queues: Mapping[UUID, Queue]) -> bool:
    """Not the last replica able to serve predictions queued for its version."""
    waiting = queues.get(r.version_id, Queue(0, 0.0)).depth
    if not waiting:
        return True
    others = [x for x in active if x.version_id == r.version_id and x.id != r.id and x.id not in drains]
    return bool(others)
