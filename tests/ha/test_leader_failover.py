"""The scheduler leader's process is killed (SIGKILL) while jobs queue: another replica leads within
10 s, every job runs exactly once, and the ledger is exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.e2e.conftest import until
from tests.ha.harness import HaCluster

pytestmark = pytest.mark.slow


async def test_kill_9_the_leader(ha: HaCluster) -> None:
    await asyncio.gather(ha.start_agent("node-a"), ha.start_agent("node-b"))  # 8 GPUs
    first = await until(ha.leader_pid, what="a leader")
    leader = next(r for r in ha.replicas if r.pid == first)
    submitter = ha.submitter()
    async with httpx.AsyncClient(timeout=10) as client:
        # Three waves for eight GPUs: placements are under way on the leader when it dies.
        ids = [await submitter.submit(client, _job(ha, f"j{i}", 1, 1.5)) for i in range(24)]
        await until(lambda: _running(ha, 4), what="the first wave to run")
        await leader.kill()
        killed_at = time.monotonic()
        new = await until(_other_leader(ha, first), deadline_s=10, what="another replica to lead")
        took = time.monotonic() - killed_at
        assert new in {r.pid for r in ha.replicas if r.running}
        # The survivors place and run the rest; agents on the dead replica moved to another.
        more = [await submitter.submit(client, _job(ha, f"k{i}", 2, 0.5)) for i in range(4)]
    assert not submitter.failed
    jobs = await ha.wait_finished([j for j in ids + more if j], deadline_s=90)
    assert {(j["status"], j["attempt"]) for j in jobs.values()} == {("succeeded", 1)}, jobs
    assert len(jobs) == 28
    await ha.audit()
    assert took < 10


def _job(ha: HaCluster, name: str, gpus: int, seconds: float) -> dict[str, object]:
    return {"name": name, "gpu_count": gpus, "script": ha.script(seconds)}


async def _running(ha: HaCluster, n: int) -> bool:
    return sum(j["status"] == "running" for j in (await ha.jobs()).values()) >= n


def _other_leader(ha: HaCluster, old: int) -> Callable[[], Awaitable[int | None]]:
    async def check() -> int | None:
        pid = await ha.leader_pid()
        return pid if pid not in (None, old) else None

    return check
