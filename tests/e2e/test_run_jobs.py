"""Jobs run by a real agent through a real server: outcomes, logs, cancel and timeouts."""

from __future__ import annotations

import json
import sys
import time

import httpx

from tests.e2e.conftest import Cluster, until

PY = sys.executable


async def test_outcomes_and_output(cluster: Cluster) -> None:
    agent = await cluster.start_agent()
    env_dump = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(('CUDA', 'GPUFLEET'))}))"
    ok = await cluster.submit(command=[PY, "-c", env_dump])
    failed = await cluster.submit(script="echo oops >&2; exit 3")
    killed = await cluster.submit(script="echo dying; kill -9 $$")
    missing = await cluster.submit(command=["/nonexistent/prog", "--flag"])
    share = await cluster.submit(command=[PY, "-c", env_dump], gpu_milli=250, min_memory_gb=8)

    job = await cluster.wait(ok)
    assert (job["status"], job["exit_code"], job["status_reason"]) == ("succeeded", 0, "exited with code 0")
    env = json.loads((await cluster.logs(ok))["stdout"])
    gpus = [g["uuid"] for g in job["requirements"].get("gpus", [])] or env["CUDA_VISIBLE_DEVICES"].split(",")
    assert env["CUDA_VISIBLE_DEVICES"].startswith("GPU-") and len(gpus) == 1
    assert (env["GPUFLEET_JOB_ID"], env["GPUFLEET_ATTEMPT"]) == (ok, "1")
    assert "GPUFLEET_GPU_SHARE" not in env

    job = await cluster.wait(failed)
    assert (job["status"], job["exit_code"], job["status_reason"]) == ("failed", 3, "exited with code 3")
    assert (await cluster.logs(failed))["stderr"] == b"oops\n"

    job = await cluster.wait(killed)
    assert job["status"] == "failed" and job["status_reason"] == "killed by signal 9 (SIGKILL)", job
    assert (await cluster.logs(killed))["stdout"] == b"dying\n"

    job = await cluster.wait(missing)
    assert job["status"] == "failed" and job["status_reason"] == "executable not found: /nonexistent/prog", job
    assert job["started_at"] is None

    job = await cluster.wait(share)
    env = json.loads((await cluster.logs(share))["stdout"])
    assert job["status"] == "succeeded" and env["GPUFLEET_GPU_SHARE"] == "0.250", (job, env)
    assert int(env["GPUFLEET_GPU_MEMORY_LIMIT_MB"]) >= 8000
    # Nothing is left on the agent once the results are in.
    await until(lambda: not agent.agent.jobs or not agent.agent.jobs.runs, what="the agent to forget its runs")
    assert agent.agent.jobs is not None and agent.agent.jobs.runtime.tracked() == []


async def test_cancel_running_jobs_even_one_that_ignores_sigterm(cluster: Cluster) -> None:
    await cluster.start_agent()
    polite = await cluster.submit(script="echo ready; sleep 60")
    stubborn = await cluster.submit(script="trap '' TERM; echo ready; sleep 60")
    for job_id in (polite, stubborn):
        await cluster.wait(job_id, "running")
        await until(lambda j=job_id: _has(cluster, j, b"ready"), what="the job's first line")
    started = time.monotonic()
    for job_id in (polite, stubborn):
        r = await cluster.api.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
    job = await cluster.wait(polite)
    assert job["status"] == "cancelled" and "SIGTERM" in job["status_reason"], job
    job = await cluster.wait(stubborn)
    assert job["status"] == "cancelled" and "killed by SIGKILL after a 1 s grace" in job["status_reason"], job
    assert time.monotonic() - started < 10


async def test_timeout_is_enforced(cluster: Cluster) -> None:
    await cluster.start_agent()
    job_id = await cluster.submit(script="echo start; sleep 30", max_runtime_s=1)
    job = await cluster.wait(job_id)
    assert job["status"] == "timed_out" and job["status_reason"].startswith("timed out"), job
    assert (await cluster.logs(job_id))["stdout"] == b"start\n"


async def test_large_binary_output_arrives_whole(cluster: Cluster) -> None:
    await cluster.start_agent()
    # 6 MiB of every byte value, in odd-sized writes, plus some stderr.
    code = (
        "import sys\n"
        "data = bytes(range(256)) * (6 * 4096)\n"
        "for i in range(0, len(data), 7919): sys.stdout.buffer.write(data[i:i + 7919])\n"
        "sys.stderr.write('done\\n')\n"
    )
    job_id = await cluster.submit(command=[PY, "-c", code])
    job = await cluster.wait(job_id, deadline_s=60)
    assert job["status"] == "succeeded", job
    logs = await cluster.logs(job_id)
    assert logs["stdout"] == bytes(range(256)) * (6 * 4096) and logs["stderr"] == b"done\n"
    assert logs["system"] == b""


async def test_follow_logs_as_server_sent_events(cluster: Cluster) -> None:
    await cluster.start_agent()
    job_id = await cluster.submit(script="for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done")
    lines: list[str] = []
    end = None
    client = httpx.AsyncClient(base_url=cluster.live.url, headers=cluster.owner.headers, timeout=30)
    async with client, client.stream("GET", f"/v1/jobs/{job_id}/logs/stream") as r:
        assert r.status_code == 200
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "log":
                lines.append(json.loads(line[6:])["text"])
            elif line.startswith("data: ") and event == "end":
                end = json.loads(line[6:])
                break
    assert "".join(lines) == "".join(f"line {i}\n" for i in range(1, 6))
    assert end is not None and end["job_status"] == "succeeded"


async def _has(cluster: Cluster, job_id: str, data: bytes) -> bool:
    return data in (await cluster.logs(job_id))["stdout"]
