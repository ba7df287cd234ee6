"""In-process wake-ups for waiting agents and log followers: one LISTEN connection per server process.

Thousands of agents long-poll for assignments at once; each waits on an ``asyncio.Event`` keyed
by its host id, and a single connection LISTENing on the execution channels fans notifications
out to them. The notifications carry no payload (any runtime-role session may LISTEN, so a host
or job id would reach other tenants): on one, the hub asks the database in one system-path query
which of the hosts (or followed jobs) waiting in this process have something new, and wakes
exactly those. Notifications that arrive during that query are folded into one more query, so
a burst of placements costs a few queries, not one per notification or per waiter. Behind a
transaction pooler (no LISTEN) one polling task asks the same question for the hosts on each
tick, and wakes log followers to re-read.

A waiter must subscribe *before* it reads the database and wait afterwards, so a wake-up that
lands between the read and the wait is not lost. Notifications can still be lost (the listening
connection drops); waiters therefore re-read at least every ``recheck_s`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal
from uuid import UUID

import asyncpg

from gpufleet.backoff import Backoff
from gpufleet.db.pool import Connection, Database, close_dedicated
from gpufleet.repo import execution as repo
from gpufleet.repo import logs as logs_repo
from gpufleet.repo import predictions as predictions_repo
from gpufleet.repo import replicas as replicas_repo
from gpufleet.repo.logs import LOGS_CHANNEL
from gpufleet.repo.scheduling import ping
from gpufleet.services.stops import pushed

if TYPE_CHECKING:
    from gpufleet.config import Settings

log = logging.getLogger(__name__)

# "predictions": agents' claim long-polls, keyed by host; "prediction": followers of one prediction
# (``Prefer: wait``, its SSE stream), keyed by prediction id (migration 0014's triggers notify both).
# "stops": a cancel or a fence (migration 0018) wakes the "assignments" waiters whose listed runs it concerns.
Channel = Literal["assignments", "logs", "predictions", "prediction", "stops"]
ASSIGNMENTS_CHANNEL = "gpufleet_assignments"
STOPS_CHANNEL = "gpufleet_stops"
PREDICTIONS_CHANNEL = "gpufleet_predictions"
PREDICTION_CHANGES_CHANNEL = "gpufleet_prediction_changes"
_CHANNELS: dict[str, Channel] = {
    ASSIGNMENTS_CHANNEL: "assignments",
    STOPS_CHANNEL: "stops",
    LOGS_CHANNEL: "logs",
    PREDICTIONS_CHANNEL: "predictions",
    PREDICTION_CHANGES_CHANNEL: "prediction",
}


class Subscription:
    """One waiter's wake-up flag; ``wait`` returns True when woken, False on timeout."""

    def __init__(self, hub: WakeHub, running: Sequence[tuple[UUID, int]] = ()) -> None:
        self._hub = hub
        self.event = asyncio.Event()
        self.running = running  # an assignment waiter's runs: woken when one must stop (``pushed``)

    async def wait(self, timeout_s: float) -> bool:
        timeout_s = max(0.0, min(timeout_s, self._hub.wait_cap_s))
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: it can swallow a cancellation (bpo-37658)
                await self.event.wait()
        except TimeoutError:
            return False
        finally:
            self.event.clear()
        return True


class WakeHub:
    """Build one per server process (``from_settings``), ``await start()``, ``await close()`` at exit.

    Not started (or its connection down), waiters still work: they re-read every ``poll_s``.
    """

    def __init__(self, db: Database, *, listen: bool = True, poll_s: float = 0.5, recheck_s: float = 5.0) -> None:
        self._db = db
        self._listen = listen
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self._waiters: dict[tuple[Channel, str], set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self.listening = False  # wake-ups flow: from LISTEN, or from the polling task
        self.draining = False  # the server is stopping: long polls answer with what they have
        self.notifications = 0
        self._dirty: set[Channel] = set()  # channels notified since the last check began
        self._checker: asyncio.Task[None] | None = None
        self._log_marks: dict[UUID, tuple[str, int, int]] = {}  # followed job -> what was seen last
        self._prediction_marks: dict[UUID, tuple[str, int, int]] = {}  # followed prediction -> seen last

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> WakeHub:
        return cls(db, listen=not settings.database_transaction_pooler, poll_s=settings.execution_poll_s)

    @property
    def wait_cap_s(self) -> float:
        """How long a waiter may sleep before re-reading: long only while notifications flow."""
        return self.recheck_s if self.listening else self.poll_s

    @property
    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    async def start(self) -> None:
        if self._task is None:
            run = self._listen_forever() if self._listen else self._poll_forever()
            self._task = asyncio.create_task(run, name="execution-wakeups")
            if not self._listen:
                self.listening = True  # the polling task wakes waiters from now on
            else:  # give the first connection a moment, so early waiters need not poll
                for _ in range(50):
                    if self.listening or self._task.done():
                        break
                    await asyncio.sleep(0.02)

    async def close(self) -> None:
        for task in (self._task, self._checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._checker = None
        await self._drop()
        self.wake_all()

    def drain(self) -> None:
        """The server is stopping: wake every waiter, and have long polls answer now (``draining``)."""
        self.draining = True
        self.wake_all()

    @contextlib.contextmanager
    def subscribe(
        self, channel: Channel, key: UUID, *, running: Sequence[tuple[UUID, int]] = ()
    ) -> Iterator[Subscription]:
        sub = Subscription(self, running)
        k = (channel, str(key))
        self._waiters.setdefault(k, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._waiters.get(k)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._waiters[k]

    def wake(self, channel: Channel, key: str) -> None:
        for sub in self._waiters.get((channel, key), ()):
            sub.event.set()

    def wake_all(self, channel: Channel | None = None) -> None:
        for (ch, _), subs in self._waiters.items():
            if channel is None or ch == channel:
                for sub in subs:
                    sub.event.set()

    # ------------------------------------------------------------------------------ LISTEN

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        self.notifications += 1
        kind = _CHANNELS.get(channel)
        if kind is None:
            return
        self._dirty.add(kind)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_dirty(), name="execution-wakeup-check")

    async def _check_dirty(self) -> None:
        while self._dirty:
            kinds, self._dirty = self._dirty, set()
            try:
                await self.check(kinds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("execution wake-up check failed; waking every waiter of %s", sorted(kinds))
                for kind in kinds:
                    self.wake_all(kind)

    async def check(self, kinds: set[Channel]) -> None:
        """Wake the waiters of ``kinds`` that have something new: one query per channel, all waiters."""
        hosts = self._keys("assignments") if "assignments" in kinds else []
        jobs = self._keys("logs") if "logs" in kinds else []
        claimers = self._keys("predictions") if "predictions" in kinds else []
        followed = self._keys("prediction") if "prediction" in kinds else []
        runners = self._runners() if "stops" in kinds else []
        if not (hosts or jobs or claimers or followed or runners):
            return
        async with self._db.system_transaction() as conn:
            if runners:
                await self._wake_stops(conn, runners)
            ready = await repo.hosts_with_assignments(conn, host_ids=hosts) if hosts else []
            marks = await logs_repo.follow_marks(conn, job_ids=jobs) if jobs else {}
            work = await replicas_repo.hosts_with_prediction_work(conn, host_ids=claimers) if claimers else []
            changes = await predictions_repo.follow_marks(conn, prediction_ids=followed) if followed else {}
        for host_id in ready:
            self.wake("assignments", str(host_id))
        for host_id in work:
            self.wake("predictions", str(host_id))
        if "logs" in kinds:
            for job_id in jobs:
                mark = marks.get(job_id)
                if mark is None or mark != self._log_marks.get(job_id):
                    self.wake("logs", str(job_id))
            self._log_marks = dict(marks)  # followed jobs only, so it stays bounded
        if "prediction" in kinds:
            for prediction_id in followed:
                seen = changes.get(prediction_id)
                if seen is None or seen != self._prediction_marks.get(prediction_id):
                    self.wake("prediction", str(prediction_id))
            self._prediction_marks = dict(changes)

    def _keys(self, channel: Channel) -> list[UUID]:
        return [UUID(key) for (ch, key) in self._waiters if ch == channel]

    def _runners(self) -> list[tuple[UUID, Subscription]]:
        """Assignment waiters that listed runs: (host id, subscription)."""
        return [
            (UUID(key), sub)
            for (ch, key), subs in self._waiters.items()
            if ch == "assignments"
            for sub in subs
            if sub.running
        ]

    async def _wake_stops(self, conn: Connection, runners: list[tuple[UUID, Subscription]]) -> None:
        """One query for the runs of every waiter; wake those whose reply would carry a stop."""
        states = await repo.run_states_any(conn, job_ids=sorted({j for _, sub in runners for j, _ in sub.running}))
        for host_id, sub in runners:
            if any(pushed(states.get(job_id), host_id, job_id, attempt) for job_id, attempt in sub.running):
                sub.event.set()

    async def _listen_forever(self) -> None:
        backoff = Backoff(0.5, cap=10.0)
        while True:
            lost = asyncio.Event()
            error: Exception | None = None
            try:
                conn = await asyncpg.connect(self._db.runtime_dsn_)
                self._conn = conn
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in _CHANNELS:
                    await conn.add_listener(channel, self._on_notify)
                self.listening = True
                backoff.reset()
                self.wake_all()  # anything may have happened while nobody listened
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.recheck_s):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(5):
                            await ping(conn)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                error = exc
            finally:
                self.listening = False
                await self._drop()
            self.wake_all()
            delay = backoff.next()
            if error is not None:
                log.warning("execution wake-up listener lost its connection (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        await close_dedicated(conn)

    # ------------------------------------------------------------------------------ polling

    async def _poll_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.poll_s)
                try:
                    await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("execution wake-up poll failed")
        finally:
            self.listening = False

    async def poll_once(self) -> None:
        """One query for every host waiting in this process; log and prediction followers simply re-read."""
        hosts = self._keys("assignments")
        claimers = self._keys("predictions")
        runners = self._runners()
        if hosts or claimers:
            async with self._db.system_transaction() as conn:
                if runners:
                    await self._wake_stops(conn, runners)
                ready = await repo.hosts_with_assignments(conn, host_ids=hosts) if hosts else []
                work = await replicas_repo.hosts_with_prediction_work(conn, host_ids=claimers) if claimers else []
            for host_id in ready:
                self.wake("assignments", str(host_id))
            for host_id in work:
                self.wake("predictions", str(host_id))
        self.wake_all("logs")
        self.wake_all("prediction")
