"""Connection pools and the two ways into the database: a tenant's transaction and the system path.

* ``transaction(org_id)``: request handling. Connects as the runtime role ``gpufleet_app``
  (not superuser, not owner, no BYPASSRLS) and sets ``gpufleet.org_id`` for this transaction
  only, so PostgreSQL's row-level security shows that organization's rows and nothing else.
* ``system_transaction()``: background work that must see every tenant (the scheduler, the
  reaper, webhook delivery, authentication before the tenant is known). Connects as the owner
  and switches to the role ``gpufleet_system``, whose policies are the only ones that span tenants.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

RUNTIME_ROLE = "gpufleet_app"
SYSTEM_ROLE = "gpufleet_system"

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


async def _init_connection(conn: Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def runtime_dsn(owner_dsn: str, password: str | None) -> str:
    """The owner's DSN with the user (and password) swapped for the runtime role's."""
    parts = urlsplit(owner_dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = RUNTIME_ROLE
    # Supabase's pooler names users "<role>.<project-ref>"; keep the suffix.
    owner_user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0] if "@" in parts.netloc else ""
    if "." in owner_user:
        user = f"{RUNTIME_ROLE}.{owner_user.split('.', 1)[1]}"
    auth = user if not password else f"{user}:{quote(password, safe='')}"
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))


class Database:
    """Two asyncpg pools (runtime role and owner) behind tenant-scoped transactions."""

    def __init__(
        self,
        owner_dsn: str,
        runtime_dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        transaction_pooler: bool = False,
    ) -> None:
        self.owner_dsn = owner_dsn
        self.runtime_dsn_ = runtime_dsn
        self.min_size = min_size
        self.max_size = max_size
        self.transaction_pooler = transaction_pooler
        self._runtime: Pool | None = None
        self._owner: Pool | None = None

    async def open(self) -> None:
        extra: dict[str, Any] = {"statement_cache_size": 0} if self.transaction_pooler else {}
        self._runtime = await asyncpg.create_pool(
            self.runtime_dsn_, min_size=self.min_size, max_size=self.max_size, init=_init_connection, **extra
        )
        self._owner = await asyncpg.create_pool(
            self.owner_dsn, min_size=1, max_size=max(2, self.max_size // 2), init=_init_connection, **extra
        )

    async def close(self) -> None:
        for pool in (self._runtime, self._owner):
            if pool is not None:
                await pool.close()
        self._runtime = self._owner = None

    @property
    def runtime_pool(self) -> Pool:
        if self._runtime is None:
            raise RuntimeError("Database.open() has not been called")
        return self._runtime

    @property
    def owner_pool(self) -> Pool:
        if self._owner is None:
            raise RuntimeError("Database.open() has not been called")
        return self._owner

    @asynccontextmanager
    async def transaction(self, org_id: UUID | None, *, user_id: UUID | None = None) -> AsyncIterator[Connection]:
        """A transaction as the runtime role, seeing only ``org_id``'s rows (none when ``None``)."""
        async with self.runtime_pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.user_id', $2, true)",
                str(org_id) if org_id else "",
                str(user_id) if user_id else "",
            )
            yield conn

    @asynccontextmanager
    async def flat_transaction(self, org_id: UUID) -> AsyncIterator[Connection]:
        """``transaction(org_id)`` in one round trip fewer, for hot paths (the heartbeat).

        BEGIN and the tenant ``set_config`` go to the server as one simple query (the values are
        UUIDs, so inlining them is safe); COMMIT on success, ROLLBACK on any exception. No
        ``conn.transaction()`` (savepoints) inside: asyncpg refuses them in a transaction it did
        not start.
        """
        org = str(UUID(str(org_id)))  # hex digits and dashes only
        async with self.runtime_pool.acquire() as conn:
            await conn.execute(
                f"begin; select set_config('gpufleet.org_id', '{org}', true), set_config('gpufleet.user_id', '', true)"
            )
            try:
                yield conn
            except BaseException:
                if not conn.is_closed():
                    # A failed ROLLBACK must not hide the error; the pool's reset rolls back then.
                    with contextlib.suppress(Exception):
                        await conn.execute("rollback")
                raise
            await conn.execute("commit")

    @asynccontextmanager
    async def system_transaction(self) -> AsyncIterator[Connection]:
        """A transaction that sees every tenant: for background work and authentication only."""
        async with self.owner_pool.acquire() as conn, conn.transaction():
            await conn.execute(f"set local role {SYSTEM_ROLE}")
            yield conn

    @asynccontextmanager
    async def owner_connection(self) -> AsyncIterator[Connection]:
        """The schema owner's connection: migrations and partition maintenance (DDL) only."""
        async with self.owner_pool.acquire() as conn:
            yield conn
