"""A cancel reaches a running job's process through the assignment long-poll, long before the next
heartbeat (30 s here): the agent signals it within a few seconds."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import Cluster, until


async def test_a_cancel_signals_the_process_well_before_the_next_heartbeat(cluster: Cluster, tmp_path: Path) -> None:
    agent = await cluster.start_agent(interval_s=30.0, assignment_wait_s=25.0)
    mark = tmp_path / "sigterm"
    job_id = await cluster.submit(
        script=f"trap 'date +%s.%N > {mark}; exit 143' TERM; echo ready; sleep 60 & wait",
    )
    await cluster.wait(job_id, "running")
    jobs = agent.agent.jobs
    assert jobs is not None
    await until(lambda: [str(r.job_id) for r in jobs.unstopped()] == [job_id] or None, what="the run to be listed")
    await until(lambda: _started(cluster, job_id), what="the job's first line")
    beats = agent.agent.heartbeats_ok
    started = time.time()
    r = await cluster.api.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    await until(mark.exists, deadline_s=5.0, what="the process to get SIGTERM")
    await until(lambda: mark.read_text().strip(), deadline_s=2.0, what="the trap's timestamp")
    assert float(mark.read_text()) - started < 3.0
    assert agent.agent.heartbeats_ok == beats  # no heartbeat carried it
    job = await cluster.wait(job_id)
    assert job["status"] == "cancelled", job


async def _started(cluster: Cluster, job_id: str) -> bool:
    return b"ready" in (await cluster.logs(job_id))["stdout"]


async def test_without_the_push_the_heartbeat_still_stops_a_cancelled_run(cluster: Cluster) -> None:
    agent = await cluster.start_agent()  # heartbeats every 0.3 s
    jobs = agent.agent.jobs
    assert jobs is not None
    jobs.api._poll_post = False  # as with a server that answers the POST with 405: GET polls, no stops in them
    job_id = await cluster.submit(script="echo ready; sleep 60")
    await cluster.wait(job_id, "running")
    await until(lambda: _started(cluster, job_id), what="the job's first line")
    beats = agent.agent.heartbeats_ok
    r = await cluster.api.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    job = await cluster.wait(job_id, deadline_s=10)
    assert job["status"] == "cancelled" and "SIGTERM" in job["status_reason"], job
    assert agent.agent.heartbeats_ok > beats
