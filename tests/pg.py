"""The PostgreSQL the tests run against: a server from GPUFLEET_TEST_DATABASE_URL, or an embedded one.

One template database is migrated once per test session; every test gets its own clone
(``CREATE DATABASE ... TEMPLATE``), so tests are isolated and fast.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gpufleet.db import migrate
from gpufleet.db.embedded import EmbeddedPostgres
from gpufleet.db.pool import RUNTIME_ROLE, Database


@dataclass
class PgServer:
    """Builds DSNs for databases on one PostgreSQL server."""

    base_dsn: str  # the admin (owner) DSN of the maintenance database
    embedded: EmbeddedPostgres | None

    def dsn(self, database: str, *, user: str | None = None) -> str:
        if self.embedded is not None:
            return self.embedded.dsn(user=user or "postgres", database=database)
        parts = urlsplit(self.base_dsn)
        netloc = parts.netloc
        if user is not None:
            netloc = f"{user}@{netloc.rsplit('@', 1)[-1]}"
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, parts.fragment))

    async def admin(self) -> asyncpg.Connection:  # type: ignore[type-arg]
        return await asyncpg.connect(self.base_dsn)

    async def create_database(self, name: str, template: str | None = None) -> None:
        conn = await self.admin()
        try:
            tpl = f' template "{template}" strategy file_copy' if template else ""
            await conn.execute(f'create database "{name}"{tpl}')
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        conn = await self.admin()
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()

    def database(self, name: str) -> Database:
        return Database(self.dsn(name), self.dsn(name, user=RUNTIME_ROLE), min_size=1, max_size=10)


def start_server() -> PgServer:
    url = os.environ.get("GPUFLEET_TEST_DATABASE_URL")
    if url:
        return PgServer(url, None)
    base = Path(tempfile.mkdtemp(prefix="gpufleet-tests-"))
    base.chmod(0o755)  # ours; as root the unprivileged postgres user must traverse it
    root = base / "postgres"
    server = EmbeddedPostgres(
        root, extra_options={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    )
    server.start()
    return PgServer(server.dsn(database="postgres"), server)


async def build_template(server: PgServer) -> str:
    name = f"gpufleet_tpl_{uuid.uuid4().hex[:10]}"
    await server.create_database(name)
    conn = await asyncpg.connect(server.dsn(name))
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()
    return name


def unique_name(prefix: str = "t") -> str:
    return f"gpufleet_{prefix}_{uuid.uuid4().hex[:12]}"
