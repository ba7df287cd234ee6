"""Numbered SQL migrations, applied in order, each in its own transaction, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from gpufleet.db.pool import Connection
from gpufleet.errors import ConfigurationError

# Any constant works as long as every gpufleet process agrees on it.
MIGRATION_LOCK = 0x6770_7566_6C65_6574 & 0x7FFF_FFFF_FFFF_FFFF

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def available() -> list[Migration]:
    found = []
    for entry in resources.files("gpufleet.db").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"duplicate migration numbers in {versions}")
    return found


_LEDGER = """
create table if not exists schema_migrations (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now()
)
"""


async def upgrade(conn: Connection) -> list[Migration]:
    """Apply every pending migration; return those applied by this call.

    Each migration runs in its own transaction holding a transaction-level advisory lock,
    so concurrent upgraders serialise and the loser sees the work already recorded (this
    also works through transaction poolers, where session locks are not available).
    """
    applied: list[Migration] = []
    for migration in available():
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(_LEDGER)
            row = await conn.fetchrow("select checksum from schema_migrations where version = $1", migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise ConfigurationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it was "
                        "applied; migrations are append-only, add a new one instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied.append(migration)
    return applied


async def status(conn: Connection) -> list[MigrationStatus]:
    exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
    done: dict[int, datetime] = {}
    if exists:
        rows = await conn.fetch("select version, applied_at from schema_migrations")
        done = {r["version"]: r["applied_at"] for r in rows}
    return [MigrationStatus(m.version, m.name, done.get(m.version)) for m in available()]


async def is_current(conn: Connection) -> bool:
    return all(s.applied_at is not None for s in await status(conn))
