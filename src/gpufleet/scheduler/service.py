"""The scheduler loop: snapshot -> decide (pure, per organization) -> batched guarded commit.

``Scheduler.run_once`` is one cycle (tests and benchmarks call it directly); ``Scheduler.run`` is
the server's loop: leader election, LISTEN/NOTIFY wake-ups (polling behind a transaction
pooler) and a periodic tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from uuid import UUID

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.observability import ServerMetrics
from gpufleet.repo import scheduling as repo
from gpufleet.scheduler import commit
from gpufleet.scheduler.allocator import make_policy
from gpufleet.scheduler.decide import OrgDecision, decide_org
from gpufleet.scheduler.leader import LeaderElection
from gpufleet.scheduler.model import Placement
from gpufleet.scheduler.policies import Policy
from gpufleet.scheduler.types import CycleResult, PendingJob

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _meaning(reason: str | None) -> str | None:
    """A reason without its numbers: "quota: 57 of 60 GPUs in use" means what "58 of 60" means."""
    return None if reason is None else _NUMBER.sub("#", reason)


@dataclass
class SchedulerStats:
    """In-process counters (a Prometheus exporter reads these)."""

    cycles: int = 0
    placements: int = 0
    conflicts: int = 0
    allocation_failed: int = 0
    reasons_written: int = 0
    errors: int = 0
    decisions: int = 0
    decision_s_total: float = 0.0
    cycle_s_total: float = 0.0
    last_cycle: CycleResult | None = None
    recent_decision_ns: deque[int] = field(default_factory=lambda: deque(maxlen=20_000))

    def decision_quantile(self, q: float) -> float:
        """Per-decision latency quantile (seconds) over the most recent decisions."""
        data = sorted(self.recent_decision_ns)
        if not data:
            return 0.0
        return data[min(len(data) - 1, int(q * len(data)))] / 1e9


@dataclass
class _Pass:
    placed: list[UUID] = field(default_factory=list)
    conflicts: int = 0
    failed: int = 0
    reasons: dict[UUID, str | None] = field(default_factory=dict)
    original: dict[UUID, str | None] = field(default_factory=dict)
    snapshot_s: float = 0.0
    decide_s: float = 0.0
    commit_s: float = 0.0
    decision_ns: list[int] = field(default_factory=list)
    waits_s: list[float] = field(default_factory=list)  # queued -> placed, of each job placed


class Scheduler:
    """Places pending jobs on their organization's GPUs. One leads across replicas (``run``)."""

    def __init__(self, db: Database, settings: Settings, metrics: ServerMetrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.stats = SchedulerStats()
        self.metrics = metrics
        self.leader = LeaderElection(
            db, transaction_pooler=settings.database_transaction_pooler, lease_s=settings.scheduler_lease_s
        )
        self._policies: dict[UUID, Policy] = {}
        self._wake = asyncio.Event()
        self._reason_written: dict[UUID, float] = {}  # job -> when this scheduler last wrote its reason

    def _policy(self, org_id: UUID) -> Policy:
        # one per organization: a learning policy learns that organization's workload
        policy = self._policies.get(org_id)
        if policy is None:
            s = self.settings
            policy = self._policies[org_id] = make_policy(
                s.scheduler_policy, max_candidates=s.scheduler_max_candidates, scan_limit=s.scheduler_scan_limit
            )
        return policy

    def wake(self) -> None:
        """Ask for a cycle now (called on NOTIFY; callable by in-process code too)."""
        self._wake.set()

    # ------------------------------------------------------------------------------ one cycle

    async def run_once(self) -> CycleResult:
        """One cycle: as many passes as lost races need (bounded), then pending reasons written."""
        started = time.perf_counter()
        total = _Pass()
        passes = 0
        still_pending = 0
        placed_ids: list[UUID] = []
        for _ in range(self.settings.scheduler_conflict_retries + 1):
            passes += 1
            one, still_pending = await self._pass()
            placed_ids += one.placed
            total.conflicts += one.conflicts
            total.failed += one.failed
            total.snapshot_s += one.snapshot_s
            total.decide_s += one.decide_s
            total.commit_s += one.commit_s
            total.decision_ns += one.decision_ns
            total.waits_s += one.waits_s
            for job_id, reason in one.original.items():
                total.original.setdefault(job_id, reason)
            total.reasons.update(one.reasons)
            if not one.conflicts:
                break
        for job_id in placed_ids:
            total.reasons.pop(job_id, None)
        changed = self._reasons_to_write(total)
        written = 0
        if changed:
            t0 = time.perf_counter()
            async with self.db.system_transaction() as conn:
                written = await repo.set_pending_reasons(conn, reasons=changed)
            total.commit_s += time.perf_counter() - t0
        result = CycleResult(
            placed=len(placed_ids),
            conflicts=total.conflicts,
            allocation_failed=total.failed,
            still_pending=still_pending,
            reasons_written=written,
            passes=passes,
            snapshot_s=total.snapshot_s,
            decide_s=total.decide_s,
            commit_s=total.commit_s,
            duration_s=time.perf_counter() - started,
            placed_job_ids=tuple(placed_ids),
        )
        st = self.stats
        st.cycles += 1
        st.placements += result.placed
        st.conflicts += result.conflicts
        st.allocation_failed += result.allocation_failed
        st.reasons_written += written
        st.cycle_s_total += result.duration_s
        st.last_cycle = result
        if self.metrics is not None:
            self.metrics.cycle(
                seconds=result.duration_s,
                placed=result.placed,
                conflicts=result.conflicts,
                failed=result.allocation_failed,
                decisions_s=(ns / 1e9 for ns in total.decision_ns),
                waits_s=total.waits_s,
            )
        return result

    def _reasons_to_write(self, total: _Pass) -> list[tuple[UUID, str | None]]:
        """The reasons that changed, less those whose counts alone changed since a recent write.

        On a busy fleet the counts in a reason ("quota: 57 of 60 GPUs in use", "3 hosts have 1")
        move every cycle; rewriting hundreds of rows per cycle for that costs the database and
        tells the user nothing new. Such a reason is rewritten at most every
        ``scheduler_reason_refresh_s``; one that says something else is written at once.
        """
        now = time.monotonic()
        refresh = self.settings.scheduler_reason_refresh_s
        last = self._reason_written
        changed: list[tuple[UUID, str | None]] = []
        for job_id, reason in total.reasons.items():
            before = total.original.get(job_id)
            if before == reason:
                continue
            written_at = last.get(job_id)
            if (
                written_at is not None
                and now - written_at < refresh
                and before is not None
                and _meaning(before) == _meaning(reason)
            ):
                continue
            changed.append((job_id, reason))
        # remember only jobs still pending: the map stays the size of the queue
        self._reason_written = {j: last[j] for j in total.reasons if j in last}
        self._reason_written.update((j, now) for j, _ in changed)
        return changed

    async def _pass(self) -> tuple[_Pass, int]:
        """Snapshot, then decide (in a worker thread) while batches commit as they fill up.

        Deciding is Python CPU work and committing is database work: overlapping them keeps both
        busy. A batch the database refused makes the rest of this pass stale: nothing after it
        is committed, and the caller runs a fresh pass.
        """
        s = self.settings
        out = _Pass()
        t0 = time.perf_counter()
        async with self.db.system_transaction() as conn:
            snap = await repo.snapshot(conn, queue_limit=s.scheduler_queue_limit)
        t1 = time.perf_counter()
        out.snapshot_s = t1 - t0
        queues: dict[UUID, list[PendingJob]] = {}
        for job in snap.pending:
            queues.setdefault(job.organization_id, []).append(job)
            out.original[job.id] = job.pending_reason
        policies = {org_id: self._policy(org_id) for org_id in queues}

        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[tuple[PendingJob, Placement]] | None] = asyncio.Queue()
        pending_batch: list[tuple[PendingJob, Placement]] = []

        def flush() -> None:
            if pending_batch:
                loop.call_soon_threadsafe(batches.put_nowait, pending_batch.copy())
                pending_batch.clear()

        def placed(job: PendingJob, placement: Placement) -> None:
            pending_batch.append((job, placement))
            if len(pending_batch) >= s.scheduler_batch_size:
                flush()

        def decide_all() -> list[OrgDecision]:
            decisions = []
            for org_id, queue in queues.items():
                decisions.append(
                    decide_org(
                        snap.hosts.get(org_id, []),
                        queue,
                        policy=policies[org_id],
                        quotas=snap.quotas.get(org_id, ()),
                        usage_by_model=snap.gpu_usage.get(org_id),
                        budgets=snap.budgets.get(org_id, ()),
                        starvation_after_s=s.scheduler_starvation_after_s,
                        max_reservations=s.scheduler_max_reservations,
                        on_placement=placed,
                    )
                )
            flush()
            return decisions

        committer = asyncio.create_task(self._commit_stream(batches, out, snapshot_at=t1))
        try:
            decisions = await asyncio.to_thread(decide_all)
        finally:
            batches.put_nowait(None)
            await committer
        t2 = time.perf_counter()
        out.decide_s = t2 - t1  # wall time, overlapping the commits
        failures: list[tuple[UUID, str]] = []
        for decision in decisions:
            failures += [(job.id, why) for job, why in decision.failed]
            out.reasons.update(decision.reasons)
            self.stats.recent_decision_ns.extend(decision.decision_ns)
            out.decision_ns += decision.decision_ns
            self.stats.decisions += len(decision.decision_ns)
            self.stats.decision_s_total += sum(decision.decision_ns) / 1e9
        if failures:
            async with self.db.system_transaction() as conn:
                out.failed = await repo.fail_jobs(conn, jobs=failures)
        out.commit_s = time.perf_counter() - t2
        placed_ids = set(out.placed)
        still = sum(1 for j in snap.pending if j.id not in placed_ids) - out.failed
        return out, still

    async def _commit_stream(
        self, batches: asyncio.Queue[list[tuple[PendingJob, Placement]] | None], out: _Pass, *, snapshot_at: float
    ) -> None:
        stale = False
        while (batch := await batches.get()) is not None:
            if stale:
                continue
            outcome = await commit.commit_batch(self.db, commit.rows_of(batch))
            out.placed += outcome.placed
            # how long each placed job waited: its wait at the snapshot, plus the time since
            placed, since = set(outcome.placed), time.perf_counter() - snapshot_at
            out.waits_s += [job.waited_s + since for job, _ in batch if job.id in placed]
            out.conflicts += len(outcome.conflicts)
            stale = outcome.aborted

    # ------------------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: lead if nobody else does, then cycle on wake-ups and every tick."""
        s = self.settings
        try:
            while not stop.is_set():
                if not await self._lead():
                    await _sleep_until(stop, s.scheduler_leader_retry_s * random.uniform(0.8, 1.2))
                    continue
                seen = 0
                try:
                    self._wake.clear()
                    seen = await self._wakeups() if s.database_transaction_pooler else 0
                    await self.run_once()
                except Exception:  # a failed cycle must not end the loop; the next tick retries
                    self.stats.errors += 1
                    if self.metrics is not None:
                        self.metrics.scheduler_errors.inc()
                    log.exception("scheduler cycle failed")
                    await _sleep_until(stop, min(s.scheduler_tick_s, 1.0))
                await self._wait_for_work(stop, seen)
        finally:
            with contextlib.suppress(Exception):
                await self.leader.release()

    async def _lead(self) -> bool:
        try:
            if self.leader.leading and await self.leader.still_leading():
                return True
            if await self.leader.try_acquire():
                if await self.leader.listen(self.wake):
                    log.debug("listening for scheduler wake-ups")
                self._wake.set()
                return True
        except (TimeoutError, OSError) as exc:
            log.warning("scheduler leader election failed: %s", exc)
        except Exception:
            log.exception("scheduler leader election failed")
        return False

    async def _wakeups(self) -> int:
        async with self.db.system_transaction() as conn:
            return await repo.wakeup_counter(conn)

    async def _wait_for_work(self, stop: asyncio.Event, seen: int) -> None:
        s = self.settings
        deadline = time.monotonic() + s.scheduler_tick_s
        if not s.database_transaction_pooler:
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=s.scheduler_tick_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            return
        # behind a pooler: poll the wake-up counter (read before the cycle, so nothing is missed)
        while not stop.is_set() and not self._wake.is_set() and time.monotonic() < deadline:
            if await self._wakeups() != seen:
                return
            await _sleep_until(stop, s.scheduler_poll_s)


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
