"""Bring the database up for a gpufleet process: embedded or external, migrated, pools open."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import asyncpg

from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database, runtime_dsn

log = logging.getLogger(__name__)

METRIC_PARTITION_DAYS_AHEAD = 3


@dataclass
class DatabaseHandle:
    db: Database
    embedded: EmbeddedPostgres | None

    async def close(self) -> None:
        await self.db.close()
        if self.embedded is not None:
            self.embedded.stop()


def start_embedded(settings: Settings) -> EmbeddedPostgres:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    if os.geteuid() == 0:
        # gpufleet's own directory: the unprivileged postgres user must be able to traverse it.
        settings.data_dir.chmod(0o755)
    server = EmbeddedPostgres(settings.embedded_dir)
    server.start()
    return server


def owner_and_runtime_dsn(settings: Settings, embedded: EmbeddedPostgres | None) -> tuple[str, str]:
    if embedded is not None:
        return embedded.dsn(), embedded.dsn(user=RUNTIME_ROLE)
    assert settings.database_url is not None
    owner = settings.database_url.get_secret_value()
    if settings.database_runtime_url is not None:
        return owner, settings.database_runtime_url.get_secret_value()
    pw = settings.database_runtime_password
    return owner, runtime_dsn(owner, pw.get_secret_value() if pw else None)


async def prepare(owner_dsn: str, settings: Settings) -> list[migrate.Migration]:
    """Migrate, give the runtime role its configured password, and keep metric partitions ahead."""
    conn = await asyncpg.connect(owner_dsn, statement_cache_size=0 if settings.database_transaction_pooler else 100)
    try:
        applied = await migrate.upgrade(conn) if settings.database_apply_migrations else []
        pw = settings.database_runtime_password
        if pw is not None and pw.get_secret_value():
            stmt = await conn.fetchval(
                "select format('alter role %I password %L', $1::text, $2::text)", RUNTIME_ROLE, pw.get_secret_value()
            )
            await conn.execute(stmt)
        if await migrate.is_current(conn):
            await conn.execute("select gpufleet_ensure_metric_partitions(1, $1)", METRIC_PARTITION_DAYS_AHEAD)
        return applied
    finally:
        await conn.close()


async def open_database(settings: Settings, *, migrate_now: bool = True) -> DatabaseHandle:
    embedded = start_embedded(settings) if settings.embedded else None
    try:
        owner, runtime = owner_and_runtime_dsn(settings, embedded)
        if migrate_now:
            applied = await prepare(owner, settings)
            for m in applied:
                log.info("applied migration %04d_%s", m.version, m.name)
        db = Database(
            owner,
            runtime,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            transaction_pooler=settings.database_transaction_pooler,
        )
        await db.open()
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    return DatabaseHandle(db, embedded)
