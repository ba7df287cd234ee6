"""The database goes away under three replicas (every session terminated, new ones refused for a
while): each replica answers 503 with Retry-After, never 500; when it is back they all recover
without a restart, a scheduler leads again, and work runs exactly once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.conftest import until
from tests.ha.harness import HaCluster

pytestmark = pytest.mark.slow


async def _set_allow_connections(ha: HaCluster, allow: bool) -> None:
    admin = await ha.pg.admin()
    try:
        await admin.execute(f'alter database "{ha.db_name}" with allow_connections {str(allow).lower()}')
        if not allow:
            await admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                ha.db_name,
            )
    finally:
        await admin.close()


async def _burst(client: httpx.AsyncClient, ha: HaCluster) -> list[httpx.Response]:
    calls = [(url, path) for url in ha.urls for path in ("/v1/jobs", "/v1/me", "/v1/hosts", "/readyz")]
    return list(await asyncio.gather(*(client.get(url + path, headers=ha.owner.headers) for url, path in calls)))


async def test_database_unreachable_then_back(ha: HaCluster) -> None:
    await ha.start_agent("node-a")
    submitter = ha.submitter()
    async with httpx.AsyncClient(timeout=10) as client:
        before = await submitter.submit(client, {"name": "before", "gpu_count": 1, "script": ha.script(0.2)})
        await ha.wait_finished([before] if before else [])
        assert {r.status_code for r in await _burst(client, ha)} == {200}

        await _set_allow_connections(ha, False)
        try:
            seen: set[str] = set()
            end = time.monotonic() + 3
            while time.monotonic() < end:  # three seconds of outage, every replica asked every round
                for r in await _burst(client, ha):
                    assert r.status_code == 503, (r.url, r.status_code, r.text[:300])
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert int(r.headers["retry-after"]) >= 1
                    seen.add(str(r.url).split("/")[2])
                await asyncio.sleep(0.2)
            assert seen == {u.split("/")[2] for u in ha.urls}
            assert await ha.leader_pid() is None
        finally:
            await _set_allow_connections(ha, True)

        # Back: no replica restarted, each answers again within seconds, and one leads again.
        back = time.monotonic()

        async def all_ok() -> bool:
            return {r.status_code for r in await _burst(client, ha)} == {200}

        await until(all_ok, deadline_s=10, what="every replica to answer again")
        await until(ha.leader_pid, deadline_s=10, what="a scheduler leader again")
        assert time.monotonic() - back < 10
        assert all(r.running for r in ha.replicas)
        after = [
            await submitter.submit(client, {"name": f"a{i}", "gpu_count": 1, "script": ha.script(0.2)})
            for i in range(4)
        ]
    assert not submitter.failed
    jobs = await ha.wait_finished([j for j in [before, *after] if j])
    assert {(j["status"], j["attempt"]) for j in jobs.values()} == {("succeeded", 1)}, jobs
    await ha.audit()
