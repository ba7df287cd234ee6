"""Leader election: exactly one active scheduler across all server replicas.

Normally a session-level ``pg_try_advisory_lock`` held on a dedicated connection: PostgreSQL
releases it the moment that session ends, so when the leader's process or connection dies a
follower (retrying every ~1.5 s) takes over within seconds. The same connection LISTENs for
wake-ups. Behind a transaction pooler a session lock would stay on whichever server connection
took it, so there a lease row (``scheduler_leases``, judged by the database clock) is renewed
instead; a dead leader's lease expires after ``lease_s``.

The lock's connection carries ``application_name = 'gpufleet scheduler HOST:PID:...'``, so
``pg_stat_activity`` joined with ``pg_locks`` names the replica that leads (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable

import asyncpg

from gpufleet.db.pool import Database, close_dedicated
from gpufleet.repo import scheduling as repo

log = logging.getLogger(__name__)

# Any constant works as long as every gpufleet process agrees on it (distinct from migrations').
LEADER_LOCK = 0x6766_7363_6865_6431 & 0x7FFF_FFFF_FFFF_FFFF
WAKE_CHANNEL = "gpufleet_scheduler"
LEASE_NAME = "scheduler"
APPLICATION_NAME = "gpufleet scheduler"


class LeaderElection:
    """Try to become, and stay, the one scheduler. ``try_acquire`` never blocks."""

    def __init__(self, db: Database, *, transaction_pooler: bool = False, lease_s: float = 10.0) -> None:
        self._db = db
        self._pooler = transaction_pooler
        self._lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._leading = False

    @property
    def application_name(self) -> str:
        return f"{APPLICATION_NAME} {self.owner}"[:63]  # PostgreSQL keeps 63 bytes

    @property
    def leading(self) -> bool:
        if self._pooler:
            return self._leading
        return self._leading and self.conn is not None and not self.conn.is_closed()

    async def try_acquire(self) -> bool:
        """Become (or stay) the leader if nobody else is; False when another process leads."""
        if self._pooler:
            return await self._renew_lease()
        if self.leading:
            return True
        await self._drop_connection()
        conn = await asyncpg.connect(self._db.owner_dsn, server_settings={"application_name": self.application_name})
        try:
            got = await repo.try_leader_lock(conn, key=LEADER_LOCK)
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self.conn = conn
        self._leading = True
        log.info("this process is now the scheduler leader (%s)", self.owner)
        return True

    async def still_leading(self) -> bool:
        """Check the lock's connection (or renew the lease); False once leadership is lost."""
        if not self._leading:
            return False
        if self._pooler:
            return await self._renew_lease()
        try:
            assert self.conn is not None
            await asyncio.wait_for(repo.ping(self.conn), timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, AssertionError):
            log.warning("scheduler leader connection lost; stepping down")
            self._leading = False
            await self._drop_connection()
            return False
        return True

    async def listen(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` on every wake-up NOTIFY; False where LISTEN is unavailable (pooler)."""
        if self._pooler or self.conn is None:
            return False
        await self.conn.add_listener(WAKE_CHANNEL, lambda *_: callback())
        return True

    async def release(self) -> None:
        if self._pooler and self._leading:
            async with self._db.system_transaction() as conn:
                await repo.drop_lease(conn, name=LEASE_NAME, owner=self.owner)
        self._leading = False
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        await close_dedicated(conn)

    async def _renew_lease(self) -> bool:
        async with self._db.system_transaction() as conn:
            self._leading = await repo.renew_lease(conn, name=LEASE_NAME, owner=self.owner, lease_s=self._lease_s)
        return self._leading
