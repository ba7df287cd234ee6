"""Shared fixtures: a real PostgreSQL, one migrated template, a fresh database per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests import dbleg
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer, build_template, start_server, unique_name


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server()
    yield server
    if server.embedded is not None:
        server.embedded.stop()
        shutil.rmtree(server.embedded.root.parent, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def database_leg(request: pytest.FixtureRequest) -> dbleg.Leg | None:
    """In CI (GPUFLEET_TEST_EXPECT_DATABASE set): record which database this session runs on and
    fail every test if it is not the leg CI expects. Elsewhere nothing is started for it."""
    expect = os.environ.get(dbleg.EXPECT_ENV)
    if not expect:
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    leg = await dbleg.record(server.base_dsn)
    dbleg.save(leg, os.environ.get(dbleg.RECORD_ENV))
    dbleg.check(expect, leg, os.environ.get("GPUFLEET_TEST_DATABASE_URL"))
    return leg


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_db(pg_server: PgServer) -> AsyncIterator[str]:
    name = await build_template(pg_server)
    yield name
    await pg_server.drop_database(name)


@pytest_asyncio.fixture(loop_scope="session")
async def db_name(pg_server: PgServer, template_db: str) -> AsyncIterator[str]:
    name = unique_name()
    await pg_server.create_database(name, template=template_db)
    yield name
    await pg_server.drop_database(name)


@pytest_asyncio.fixture(loop_scope="session")
async def db(pg_server: PgServer, db_name: str) -> AsyncIterator[Database]:
    database = pg_server.database(db_name)
    await database.open()
    yield database
    await database.close()


# A real server over the test's database, and the owner whose key talks to it: the fixtures of
# every test that drives the real `gpufleet` binary or the SDK over HTTP.
@pytest_asyncio.fixture(loop_scope="session")
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE))
    server.start()
    yield server
    server.stop()
