"""Connection pools and the two ways into the database: a tenant's transaction and the system path.

* ``transaction(org_id)``: request handling. Connects as the runtime role ``gpufleet_app``
  (not superuser, not owner, no BYPASSRLS) and sets ``gpufleet.org_id`` for this transaction
  only, so PostgreSQL's row-level security shows that organization's rows and nothing else.
  The setting counts only with its ``gpufleet.tenant_tag``, an HMAC under a key only the owner
  can read (migration 0007): a session that can run SQL as the runtime role, but holds no key,
  cannot make the database show it another organization's rows (docs/security.md).
* ``system_transaction()``: background work that must see every tenant (the scheduler, the
  reaper, webhook delivery, authentication before the tenant is known). Connects as the owner
  and switches to the role ``gpufleet_system``, whose policies are the only ones that span tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
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

# The tag travels as a bind parameter, never in the query text, so no other session can read it
# from pg_stat_activity.
_SET_TENANT = (
    "select set_config('gpufleet.org_id', $1, true), set_config('gpufleet.user_id', $2, true),"
    " set_config('gpufleet.tenant_tag', $3, true)"
)


# Connections whose last use left no session state behind (``flat_transaction``: BEGIN, then
# COMMIT or ROLLBACK, settings local to the transaction, no cursors, LISTEN or advisory locks):
# the pool need not send its reset query for them, a round trip of four statements per request.
_clean: weakref.WeakSet[asyncpg.Connection[Any]] = weakref.WeakSet()


async def _reset_connection(conn: asyncpg.Connection[Any]) -> None:
    """The pool's reset on release (after asyncpg rolled back an open transaction): the default
    query, unless the connection's last use is known to have changed nothing of the session."""
    if conn in _clean:
        _clean.discard(conn)
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


def _mark_clean(proxy: Connection) -> None:
    raw = getattr(proxy, "_con", None)  # the pool's proxy holds the connection it releases
    if raw is not None:
        _clean.add(raw)


async def _init_connection(conn: Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def close_dedicated(conn: asyncpg.Connection[Any] | None) -> None:
    """Close a connection opened outside the pools (a LISTEN or a session lock's): politely within
    five seconds, else cut, so a dead server never holds up a shutdown or a reconnect."""
    if conn is None or conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


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
        self._tenant_key: bytes | None = None
        self._tags: dict[str, str] = {}  # "org/user" -> its tag under _tenant_key

    async def open(self) -> None:
        extra: dict[str, Any] = {"statement_cache_size": 0} if self.transaction_pooler else {}
        self._runtime = await asyncpg.create_pool(
            self.runtime_dsn_,
            min_size=self.min_size,
            max_size=self.max_size,
            init=_init_connection,
            reset=_reset_connection,
            **extra,
        )
        self._owner = await asyncpg.create_pool(
            self.owner_dsn, min_size=1, max_size=max(2, self.max_size // 2), init=_init_connection, **extra
        )
        with contextlib.suppress(asyncpg.UndefinedTableError):  # not migrated yet: loaded on first use
            await self._load_tenant_key()

    async def _load_tenant_key(self) -> bytes:
        """The key of the tenant tags; read once, as the owner (the runtime role cannot read it)."""
        async with self.owner_pool.acquire() as conn:
            key = await conn.fetchval("select secret from gpufleet_tenant_key")
        if key is None:
            raise RuntimeError("gpufleet_tenant_key is empty; run `select gpufleet_rotate_tenant_key()` as the owner")
        self._tenant_key = bytes(key)
        self._tags.clear()
        return self._tenant_key

    async def tenant_tag(self, org: str, user: str) -> str:
        """The tag that makes the database accept ``org``/``user`` as this transaction's tenant."""
        key = self._tenant_key if self._tenant_key is not None else await self._load_tenant_key()
        name = f"{org}/{user}"
        tag = self._tags.get(name)
        if tag is None:  # an HMAC costs more than the rest of a heartbeat's tenant setup
            if len(self._tags) >= 100_000:
                self._tags.clear()
            tag = self._tags[name] = hmac.new(key, name.encode(), hashlib.sha256).hexdigest()
        return tag

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
        org, user = str(org_id) if org_id else "", str(user_id) if user_id else ""
        tag = await self.tenant_tag(org, user)
        async with self.runtime_pool.acquire() as conn, conn.transaction():
            await conn.execute(_SET_TENANT, org, user, tag)
            yield conn

    @asynccontextmanager
    async def flat_transaction(self, org_id: UUID) -> AsyncIterator[Connection]:
        """``transaction(org_id)`` without asyncpg's transaction object, for hot paths (the heartbeat).

        A plain BEGIN, then the tenant settings (the tag as a bind parameter: inlined into one
        simple query with BEGIN it would show in pg_stat_activity to every runtime-role session);
        COMMIT on success, ROLLBACK on any exception. No ``conn.transaction()`` (savepoints)
        inside: asyncpg refuses them in a transaction it did not start. Nor anything that outlives
        the transaction (session settings, LISTEN, advisory locks, held cursors): the connection
        goes back to the pool without the reset query.
        """
        org = str(UUID(str(org_id)))
        tag = await self.tenant_tag(org, "")
        async with self.runtime_pool.acquire() as conn:
            await conn.execute("begin")
            try:
                await conn.execute(_SET_TENANT, org, "", tag)
                yield conn
            except BaseException:
                if not conn.is_closed():
                    # A failed ROLLBACK must not hide the error; the pool's reset rolls back then.
                    with contextlib.suppress(Exception):
                        await conn.execute("rollback")
                        _mark_clean(conn)
                raise
            await conn.execute("commit")
            _mark_clean(conn)

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


async def in_batches(db: Database, step: Callable[[Connection, int], Awaitable[int]], *, batch: int) -> int:
    """Run ``step(conn, batch)`` (it handles at most ``batch`` rows and says how many), each time in
    its own system transaction, until a step handles fewer; the total. No statement holds many locks
    or a long transaction."""
    total = 0
    while True:
        async with db.system_transaction() as conn:
            n = await step(conn, batch)
        total += n
        if n < batch:
            return total
