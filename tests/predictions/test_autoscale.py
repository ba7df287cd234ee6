"""The autoscaler's pure decision: scale up on depth and age, cold starts, scale to zero, rolling
updates one replica at a time, pinned versions, backoff."""

from __future__ import annotations

from uuid import UUID, uuid4

from gpufleet.domain.predictions import ReplicaStatus
from gpufleet.services.autoscale import Queue, ReplicaLoad, ScaleInput, decide

V1, V2 = UUID(int=1), UUID(int=2)
S, RD, D = ReplicaStatus.STARTING, ReplicaStatus.READY, ReplicaStatus.DRAINING


def rep(
    status: ReplicaStatus = RD, version: UUID = V1, release: int = 1, in_flight: int = 0, idle: float = 0
) -> ReplicaLoad:
    return ReplicaLoad(uuid4(), version, release, status, in_flight, idle)


def state(*replicas: ReplicaLoad, queue: dict[UUID, tuple[int, float]] | None = None, **kw: object) -> ScaleInput:
    base: dict[str, object] = {
        "version_id": V1,
        "release": 1,
        "min_replicas": 0,
        "max_replicas": 4,
        "idle_timeout_s": 300,
        "concurrency": 1,
    }
    base.update(kw)
    queues = {v: Queue(n, age) for v, (n, age) in (queue or {}).items()}
    return ScaleInput(replicas=tuple(replicas), queues=queues, **base)  # type: ignore[arg-type]


def test_nothing_to_do_when_idle_and_at_zero() -> None:
    assert decide(state()).idle


def test_cold_start_at_once_and_bounded_by_the_demand() -> None:
    assert decide(state(queue={V1: (1, 0.0)})).start == (V1,)
    assert decide(state(queue={V1: (3, 0.0)})).start == (V1, V1, V1)  # three queued, concurrency 1
    assert decide(state(queue={V1: (3, 0.0)}, concurrency=2)).start == (V1, V1)
    assert decide(state(queue={V1: (50, 0.0)})).start == (V1,) * 4  # max_replicas


def test_more_replicas_only_once_the_queue_is_old_enough() -> None:
    busy = rep(in_flight=1)
    assert decide(state(busy, queue={V1: (2, 0.2)})).idle  # young: the busy one may take it
    assert decide(state(busy, queue={V1: (2, 1.5)})).start == (V1, V1)  # 2 queued + 1 running -> 3
    starting = rep(S)
    assert decide(state(busy, starting, queue={V1: (1, 5.0)})).idle  # one is on its way already


def test_min_replicas_kept_and_max_respected() -> None:
    assert decide(state(min_replicas=2)).start == (V1, V1)
    assert decide(state(rep(), min_replicas=2)).start == (V1,)
    full = [rep(in_flight=1) for _ in range(4)]
    assert decide(state(*full, queue={V1: (10, 30.0)})).idle


def test_idle_replicas_drain_beyond_min_and_to_zero() -> None:
    idle = rep(idle=301)
    busy_but_idle_clock = rep(idle=900, in_flight=1)
    fresh = rep(idle=10)
    d = decide(state(idle, busy_but_idle_clock, fresh))
    assert d.drain == (idle.id,) and not d.start
    assert decide(state(idle, min_replicas=1)).idle  # the minimum stays
    a, b = rep(idle=400), rep(idle=500)
    assert decide(state(a, b, min_replicas=1)).drain == (b.id,)  # the longest idle goes first


def test_backoff_holds_starts_but_not_drains() -> None:
    idle = rep(idle=1000)
    d = decide(state(idle, queue={V2: (1, 9.0)}, backing_off=True, min_replicas=0))
    assert d.start == () and d.drain == (idle.id,)
    assert decide(state(queue={V1: (5, 100.0)}, backing_off=True)).idle


def test_rolling_update_replaces_one_replica_at_a_time() -> None:
    old_a, old_b = rep(release=1, idle=5), rep(release=1, idle=6)
    # Release 2 runs V2: one new replica starts (a surge of one over max_replicas 2).
    step = state(old_a, old_b, version_id=V2, release=2, min_replicas=2, max_replicas=2)
    assert decide(step).start == (V2,) and decide(step).drain == ()
    new_1 = rep(S, V2, 2)
    assert decide(state(old_a, old_b, new_1, version_id=V2, release=2, min_replicas=2, max_replicas=2)).idle
    # The new one is ready: one old one drains, and the next new one starts.
    new_1 = rep(RD, V2, 2)
    d = decide(state(old_a, old_b, new_1, version_id=V2, release=2, min_replicas=2, max_replicas=2))
    assert len(d.drain) == 1 and d.drain[0] in (old_a.id, old_b.id) and d.start == (V2,)
    left = old_a if d.drain[0] == old_b.id else old_b
    new_2 = rep(RD, V2, 2)
    d = decide(state(left, rep(D, V1, 1), new_1, new_2, version_id=V2, release=2, min_replicas=2, max_replicas=2))
    assert d.drain == (left.id,) and d.start == ()


def test_rolling_update_keeps_the_last_old_replica_while_its_version_has_a_queue() -> None:
    old = rep(release=1)
    new = rep(RD, V2, 2)
    d = decide(state(old, new, version_id=V2, release=2, queue={V1: (3, 1.0)}))
    assert old.id not in d.drain
    assert decide(state(old, new, version_id=V2, release=2)).drain == (old.id,)


def test_rolling_update_of_hardware_keeps_serving_the_same_version() -> None:
    old = rep(release=1, in_flight=1)
    d = decide(state(old, queue={V1: (1, 0.0)}, release=2, max_replicas=1))
    assert d.start == (V1,)  # the new release starts although the old one serves the version
    d = decide(state(old, rep(RD, V1, 2), queue={V1: (1, 0.0)}, release=2, max_replicas=1))
    assert d.drain == (old.id,)


def test_a_version_nothing_serves_gets_one_replica_even_at_max() -> None:
    full = [rep(in_flight=1) for _ in range(4)]
    assert decide(state(*full, queue={V2: (2, 0.0)})).start == (V2,)
    pinned = rep(RD, V2, 1, idle=400)
    assert decide(state(pinned)).drain == (pinned.id,)  # idle: drained, no minimum for pinned versions
    assert pinned.id not in decide(state(pinned, queue={V2: (1, 0.0)})).drain


def test_draining_replicas_neither_serve_nor_count() -> None:
    assert decide(state(rep(D), queue={V1: (1, 0.0)})).start == (V1,)
