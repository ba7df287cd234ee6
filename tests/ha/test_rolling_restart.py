"""A rolling restart of three replicas (SIGTERM, start again, one at a time) while a client submits
jobs with Idempotency-Key retries and agents run them: no failed submission, no lost job, no double
run, no host ever judged unreachable."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.ha.harness import HaCluster

pytestmark = pytest.mark.slow


async def test_rolling_restart_under_load(ha: HaCluster) -> None:
    await asyncio.gather(ha.start_agent("node-a"), ha.start_agent("node-b"))
    submitter = ha.submitter()
    silence: list[float] = []
    done = asyncio.Event()

    async def submit_all() -> list[str]:
        ids: list[str] = []
        async with httpx.AsyncClient(timeout=10) as client:
            i = 0
            while not done.is_set() or i < 20:
                body = {"name": f"job-{i}", "gpu_count": 1 + i % 2, "script": ha.script(0.3)}
                key = f"roll-{i}"
                job_id = await submitter.submit(client, body, key)
                if job_id is not None:
                    ids.append(job_id)
                    if i % 3 == 0:  # as if the answer had been lost: the same request again
                        assert await submitter.submit(client, body, key) == job_id
                i += 1
                await asyncio.sleep(0.1)
        return ids

    async def watch_silence() -> None:
        """The longest any host went without a heartbeat landing on some replica (database clock)."""
        while not done.is_set():
            with contextlib.suppress(Exception):  # the audit pool may be between connections
                async with ha.db.system_transaction() as conn:
                    worst = await conn.fetchval("select max(extract(epoch from now() - last_heartbeat_at)) from hosts")
                silence.append(float(worst or 0))
            await asyncio.sleep(0.2)

    load = asyncio.create_task(submit_all())
    watcher = asyncio.create_task(watch_silence())
    await asyncio.sleep(1.0)
    for replica in ha.replicas:
        assert await replica.stop() == 0
        await asyncio.sleep(0.5)  # down for a moment: requests that reach it are refused
        replica.start()
        await replica.ready()
    done.set()
    ids = await load
    await watcher

    assert not submitter.failed, submitter.failed
    assert submitter.retries > 0  # some requests did meet a stopped replica
    assert submitter.replays >= len(ids) // 3
    jobs = await ha.wait_finished(ids, deadline_s=60)
    assert len(jobs) == len(ids) == len(set(ids))  # one job per key: nothing lost, nothing doubled
    assert {(j["status"], j["attempt"]) for j in jobs.values()} == {("succeeded", 1)}, jobs
    await ha.audit()
    async with ha.db.system_transaction() as conn:
        assert await conn.fetchval("select count(*) from events where type = 'host.unreachable'") == 0
    assert max(silence) < 10, max(silence)
