"""A job stopped because its host stopped ends ``interrupted``: requeued per its host-loss policy
(and run again on the next start), else failed saying so; never "failed: cancelled". The same for
an agent stopped in-process and for the `gpufleet agent --stop-jobs-on-exit` program on SIGTERM
(what `gpufleet up`'s local agent is)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

from tests.e2e.conftest import Cluster, until

REASON = "interrupted: the agent stopped; stopped by signal 15 (SIGTERM)"
# Runs until stopped on its first attempt, finishes at once on a later one.
AGAIN = 'if [ "$GPUFLEET_ATTEMPT" = 1 ]; then echo ready; exec sleep 60; fi; echo "attempt $GPUFLEET_ATTEMPT"'


async def _ready(cluster: Cluster, *job_ids: str) -> None:
    for job_id in job_ids:
        await cluster.wait(job_id, "running")
        await until(lambda j=job_id: _has(cluster, j, b"ready"), what="the job's first line")


async def _has(cluster: Cluster, job_id: str, data: bytes) -> bool:
    return data in (await cluster.logs(job_id))["stdout"]


async def test_jobs_of_a_stopping_agent_are_requeued_and_run_on_its_next_start(cluster: Cluster) -> None:
    agent = await cluster.start_agent()  # stop_jobs_on_exit, as gpufleet up's local agent
    again = await cluster.submit(script=AGAIN)
    once = await cluster.submit(script="echo ready; exec sleep 60", retry={"on_host_loss": False})
    await _ready(cluster, again, once)
    await agent.close()

    job = await cluster.job(again)
    # Requeued as attempt 2, and placed again at once: this host is still the only one with room.
    assert job["status"] in ("pending", "allocated") and job["attempt"] == 2, job
    job = await cluster.job(once)
    assert (job["status"], job["status_reason"]) == ("failed", REASON), job
    events = (await cluster.api.get(f"/v1/jobs/{again}/events")).json()["items"]
    requeued = [e for e in events if e["type"] == "job.requeued"]
    assert len(requeued) == 1 and requeued[0]["data"]["cause"] == "host_stopped", events
    assert requeued[0]["data"]["reason"] == f"attempt 1 {REASON}", requeued

    await cluster.start_agent()  # the same host again: the requeued job runs on this start
    job = await cluster.wait(again)
    assert (job["status"], job["attempt"]) == ("succeeded", 2), job
    assert (await cluster.logs(again, attempt=2))["stdout"] == b"attempt 2\n"


async def test_the_agent_program_on_sigterm_interrupts_its_jobs_the_same_way(cluster: Cluster) -> None:
    args = [
        "--server",
        cluster.live.url,
        "--simulate",
        "2xA100-80GB",
        "--name",
        "prog-1",
        "--interval",
        "0.5",
        "--state-dir",
        str(cluster.tmp / "prog"),
        "--stop-jobs-on-exit",
        "--job-user",
        "agent",
    ]
    proc = _agent_program(args, cluster.token)
    try:
        job_id = await cluster.submit(script=AGAIN)
        await _ready_or_dead(cluster, job_id, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err
        job = await cluster.job(job_id)
        assert job["status"] in ("pending", "allocated") and job["attempt"] == 2, job
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    r = await cluster.api.post(f"/v1/jobs/{job_id}/cancel")  # leave nothing pending for the ledger audit
    assert r.status_code == 200, r.text


def _agent_program(args: list[str], token: str) -> subprocess.Popen[str]:
    env = {**os.environ, "GPUFLEET_JOIN_TOKEN": token}
    return subprocess.Popen(
        [sys.executable, "-m", "gpufleet.cli.main", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def _ready_or_dead(cluster: Cluster, job_id: str, proc: subprocess.Popen[Any]) -> None:
    async def check() -> bool:
        assert proc.poll() is None, proc.communicate()
        return await _has(cluster, job_id, b"ready")

    await until(check, deadline_s=60, what="the job to run on the agent program")
