"""Database connections killed under a live server: 503 with Retry-After (never 500), then recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import facts, gpus
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(
        pg_server.dsn(db_name),
        pg_server.dsn(db_name, user=RUNTIME_ROLE),
        settings={"rate_limit_key_per_minute": 0, "rate_limit_ip_per_minute": 0},
    )
    server.start()
    yield server
    server.stop()


async def _terminate_all(pg_server: PgServer, db_name: str) -> int:
    admin = await pg_server.admin()
    try:
        killed = await admin.fetchval(
            """select count(pg_terminate_backend(pid)) from pg_stat_activity
                where datname = $1 and pid <> pg_backend_pid()""",
            db_name,
        )
    finally:
        await admin.close()
    return int(killed)


async def test_terminated_connections_give_503_and_the_pool_recovers(
    live: LiveServer, owner: Tenant, pg_server: PgServer, db_name: str
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as client:
        r = await client.post("/v1/join-tokens", json={}, headers=owner.headers)
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        r = await client.post(
            "/v1/agent/register",
            json={"name": "n1", "facts": facts("n1"), "gpus": gpus("n1", 1)},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        host = {"Authorization": f"Bearer {r.json()['credential']}"}

        def calls() -> list[tuple[str, dict[str, str]]]:
            return [
                *[("/v1/agent/assignments", host)] * 12,
                *[("/v1/jobs", owner.headers)] * 6,
                *[("/v1/me", owner.headers)] * 4,
            ]

        async def burst() -> list[httpx.Response]:
            return list(await asyncio.gather(*(client.get(path, headers=h) for path, h in calls())))

        # Three rounds: the race between a dead connection and the next query on it is timing-bound.
        for _ in range(3):
            await until_all_succeed(burst)  # every pooled connection open (again)
            # Long-polls in flight while their connections die, then a burst on the dead pool.
            polls = [
                asyncio.create_task(client.get("/v1/agent/assignments", params={"wait_s": 2}, headers=host))
                for _ in range(12)
            ]
            await asyncio.sleep(0.5)
            assert await _terminate_all(pg_server, db_name) >= 2
            seen = [*await burst(), *await asyncio.gather(*polls)]
            for r in seen:
                assert r.status_code in (200, 503), (r.status_code, r.text[:300])
                if r.status_code == 503:
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert int(r.headers["retry-after"]) >= 1
            # The pool replaces the dead connections by itself: soon every call succeeds again.
            await until_all_succeed(burst)


async def until_all_succeed(burst: Callable[[], Awaitable[list[httpx.Response]]]) -> None:
    deadline = time.monotonic() + 10
    while True:
        statuses = {r.status_code for r in await burst()}
        if statuses == {200}:
            return
        assert statuses <= {200, 503}, statuses
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.2)
