"""Failures around running jobs: host loss and fencing, agent restarts, server restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil

from gpufleet.agent.loop import Agent
from gpufleet.background import liveness, reaper
from gpufleet.config import Settings
from tests.e2e.conftest import Cluster, until


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _wait_flag_script(flag: Path, code: int) -> str:
    return f"echo before; while [ ! -e {flag} ]; do sleep 0.05; done; echo after; exit {code}"


async def test_host_loss_requeues_and_fences_the_stale_attempt(cluster: Cluster) -> None:
    # Agent A is driven by hand: its job loop runs, its heartbeats only when the test says.
    a = Agent(cluster.config("node-a"))
    assert await a.start() is not None
    a.jobs = a.job_runner()
    stop_a = asyncio.Event()
    loop_a = asyncio.create_task(a.jobs.run(stop_a))
    await a.heartbeat_once()
    chatty = await cluster.submit(script="while true; do echo tick; sleep 0.1; done")
    silent = await cluster.submit(script="echo hi; exec sleep 60")
    for job_id in (chatty, silent):
        await cluster.wait(job_id, "running")
    runs = a.jobs.runs
    pids = {job_id: runs[job_id].pid for job_id in (chatty, silent)}
    assert all(_alive(p) for p in pids.values())

    # A goes silent; the server declares the host lost and requeues both jobs as attempt 2.
    assert a.credential is not None
    host_a = a.credential.host_id
    async with cluster.db.system_transaction() as conn:
        await conn.execute("update hosts set last_heartbeat_at = now() - interval '10 minutes' where id = $1", host_a)
    assert [h.host_id for h in await liveness.run_once(cluster.db)] == [host_a]
    async with cluster.db.system_transaction() as conn:
        await conn.execute("update hosts set unreachable_since = now() - interval '10 minutes' where id = $1", host_a)
    result = await reaper.run_once(cluster.db, Settings())
    assert sorted(map(str, result.requeued)) == sorted([chatty, silent]), result

    # A second agent picks up attempt 2 of both.
    b = await cluster.start_agent("node-b")
    assert b.agent.credential is not None
    for job_id in (chatty, silent):
        job = await cluster.wait(job_id, "running")
        assert (job["attempt"], job["host_id"]) == (2, str(b.agent.credential.host_id)), job

    # A's assignment long-poll lists both runs, so the requeue fences both at once (pushed), with
    # no heartbeat from A: the silent one, which uploads nothing, too. A kills them and forgets them.
    for job_id in (chatty, silent):
        await until(
            lambda j=job_id: j not in runs and not _alive(pids[j]), what=f"the fenced job {job_id} to be killed"
        )
    assert a.jobs.runtime.tracked() == []
    reply = await a.heartbeat_once()  # the fallback has nothing left to say
    assert reply.instructions.kill == []

    # Attempt 2 carries on undisturbed; the old attempt's output stays attempt 1's.
    for job_id in (chatty, silent):
        assert (await cluster.job(job_id))["status"] == "running"
        r = await cluster.api.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        assert (await cluster.wait(job_id))["status"] == "cancelled"
    assert (await cluster.logs(silent, attempt=1))["stdout"] == b"hi\n"
    stop_a.set()
    await asyncio.wait_for(loop_a, 10)
    await a.jobs.close()
    await a.close()


async def test_agent_restart_mid_job(cluster: Cluster, tmp_path: Path) -> None:
    first = await cluster.start_agent("node-r", stop_jobs_on_exit=False)
    flag_down, flag_up = tmp_path / "down", tmp_path / "up"
    ends_while_down = await cluster.submit(script=await _wait_flag_script(flag_down, 7))
    ends_after = await cluster.submit(script=await _wait_flag_script(flag_up, 0))
    for job_id in (ends_while_down, ends_after):
        await cluster.wait(job_id, "running")
        await until(lambda j=job_id: _stdout_has(cluster, j, b"before"), what="the first line")
    assert first.agent.jobs is not None
    pids = {j: first.agent.jobs.runs[j].pid for j in (ends_while_down, ends_after)}
    await first.close()  # the agent stops; its jobs do not
    assert all(_alive(p) for p in pids.values())
    flag_down.touch()
    await until(lambda: not _alive(pids[ends_while_down]), what="the first job to end while the agent is down")

    second = await cluster.start_agent("node-r")  # same state dir: recovers and reconciles
    job = await cluster.wait(ends_while_down)
    assert (job["status"], job["exit_code"], job["attempt"]) == ("failed", 7, 1), job
    assert (await cluster.logs(ends_while_down))["stdout"] == b"before\nafter\n"
    assert (await cluster.job(ends_after))["status"] == "running"
    flag_up.touch()
    job = await cluster.wait(ends_after)
    assert (job["status"], job["exit_code"], job["attempt"]) == ("succeeded", 0, 1), job
    assert (await cluster.logs(ends_after))["stdout"] == b"before\nafter\n"
    assert second.agent.jobs is not None
    await until(lambda: second.agent.jobs is not None and not second.agent.jobs.runs, what="the runs forgotten")


async def test_server_restart_mid_job(cluster: Cluster, tmp_path: Path) -> None:
    agent = await cluster.start_agent()
    flag = tmp_path / "flag"
    job_id = await cluster.submit(script=await _wait_flag_script(flag, 0))
    await cluster.wait(job_id, "running")
    await until(lambda: _stdout_has(cluster, job_id, b"before"), what="the first line")
    port = cluster.live.port
    await asyncio.to_thread(cluster.live.stop)
    flag.touch()  # the job ends while the server is down; the agent keeps its output and outcome
    assert agent.agent.jobs is not None
    runs = agent.agent.jobs.runs
    await until(
        lambda: agent.agent.jobs is not None and agent.agent.jobs.runtime.outcome(job_id) is not None,
        what="the job to end",
    )
    assert job_id in runs
    cluster.live = cluster.server(port)
    await asyncio.to_thread(cluster.live.start)
    job = await cluster.wait(job_id)
    assert (job["status"], job["exit_code"]) == ("succeeded", 0), job
    assert (await cluster.logs(job_id))["stdout"] == b"before\nafter\n"
    assert not agent.task.done()


async def _stdout_has(cluster: Cluster, job_id: str, data: bytes) -> bool:
    return data in (await cluster.logs(job_id))["stdout"]
