"""One database per test module here (not per test): every test works in organizations of its
own, so they cannot see each other, and the suite stays fast. Tests whose subject is global
(retention's watermark and partitions) live in a module of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from gpufleet.db.pool import Database
from tests.pg import PgServer, unique_name


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(pg_server: PgServer, template_db: str) -> AsyncIterator[Database]:
    name = unique_name("h")
    await pg_server.create_database(name, template=template_db)
    database = pg_server.database(name)
    await database.open()
    yield database
    await database.close()
    await pg_server.drop_database(name)
