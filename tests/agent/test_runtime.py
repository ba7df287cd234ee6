"""ProcessRuntime with real processes: outcomes, environment, termination, logs, restart recovery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from gpufleet.agent.processes.logs import LogBuffer
from gpufleet.agent.processes.proc import StateRecord
from gpufleet.agent.processes.runtime import LogChunk, ProcessRuntime, ProcessSpec, UnknownJobError

READY = "import sys; print('ready', flush=True); "


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def eventually(predicate: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def alive(pid: int | None) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(
        tmp_path / "state",
        work_root=tmp_path / "work",
        base_env={"PATH": os.environ["PATH"], "HOME": "/root", "GPUFLEET_AGENT_TOKEN": "secret"},
    )
    yield runtime
    for job_id in runtime.running():
        await runtime.terminate(job_id, grace_s=0)
    await runtime.close()


async def collect(rt: ProcessRuntime, job_id: str, *, limit_s: float = 10.0) -> dict[str, bytes]:
    """Drain and ack until the job's logs are complete, checking order and contiguity."""
    out = {"stdout": bytearray(), "stderr": bytearray()}
    last_seq = 0
    deadline = time.monotonic() + limit_s
    while not rt.logs_complete(job_id):
        assert time.monotonic() < deadline, "logs did not complete"
        chunks = await rt.drain_logs(job_id, 256 * 1024, wait_s=0.05)
        for c in chunks:
            assert c.seq > last_seq and not c.is_marker and len(c.data) <= 64 * 1024
            assert c.offset == len(out[c.stream])
            out[c.stream] += c.data
            last_seq = c.seq
        if chunks:
            rt.ack(job_id, chunks[-1].seq)
    return {k: bytes(v) for k, v in out.items()}


async def wait_for_output(rt: ProcessRuntime, job_id: str, text: bytes, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not any(text in c.data for c in await rt.drain_logs(job_id, wait_s=0.02)):
        assert time.monotonic() < deadline, f"{text!r} never appeared"


async def test_success(rt: ProcessRuntime) -> None:
    job = await rt.start(ProcessSpec("ok", 1, argv=py("print('hello')")))
    assert job.pid and job.outcome is None and rt.running() == ["ok"]
    assert Path(job.working_dir) == rt.work_root / "ok.1"
    outcome = await rt.wait("ok")
    assert (outcome.status, outcome.exit_code, outcome.signal) == ("succeeded", 0, None)
    assert await collect(rt, "ok") == {"stdout": b"hello\n", "stderr": b""}
    assert rt.running() == []


async def test_nonzero_exit(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("bad", 1, argv=py("import sys; sys.stderr.write('boom\\n'); sys.exit(3)")))
    outcome = await rt.wait("bad")
    assert (outcome.status, outcome.exit_code, outcome.reason) == ("failed", 3, "exited with code 3")
    assert (await collect(rt, "bad"))["stderr"] == b"boom\n"


async def test_killed_by_signal(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("sig", 1, argv=py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")))
    outcome = await rt.wait("sig")
    assert (outcome.status, outcome.exit_code, outcome.signal) == ("failed", None, 9)
    assert outcome.reason == "killed by signal 9 (SIGKILL)"


async def test_script_runs_in_a_shell(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("sh", 1, script="echo out; echo err >&2; exit 4"))
    assert (await rt.wait("sh")).exit_code == 4
    assert await collect(rt, "sh") == {"stdout": b"out\n", "stderr": b"err\n"}


@pytest.mark.parametrize(
    ("argv", "workdir", "reason"),
    [
        (["definitely-not-a-command-3f9"], None, "executable not found: definitely-not-a-command-3f9"),
        (["true"], "/nonexistent/dir", "working directory does not exist: /nonexistent/dir"),
        (["./not-executable"], ".", "permission denied: ./not-executable is not executable"),
    ],
)
async def test_start_failures_are_outcomes(
    rt: ProcessRuntime, tmp_path: Path, argv: list[str], workdir: str | None, reason: str
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    wd = str(tmp_path) if workdir == "." else workdir
    job = await rt.start(ProcessSpec("nope", 1, argv=argv, working_dir=wd))
    assert job.pid is None and job.outcome is not None
    assert (job.outcome.status, job.outcome.reason) == ("failed", reason)
    assert await rt.wait("nope") == job.outcome
    assert rt.running() == [] and rt.logs_complete("nope")
    assert not list((rt.state_dir / "jobs").iterdir())  # no launch file with the env left behind


async def env_of(rt: ProcessRuntime, spec: ProcessSpec) -> dict[str, str]:
    await rt.start(spec)
    assert (await rt.wait(spec.job_id)).status == "succeeded"
    env: dict[str, str] = json.loads((await collect(rt, spec.job_id))["stdout"])
    return env


DUMP_ENV = py("import json, os; print(json.dumps(dict(os.environ)))")


async def test_environment_of_a_gpu_job(rt: ProcessRuntime) -> None:
    env = await env_of(
        rt,
        ProcessSpec("e1", 2, argv=DUMP_ENV, gpus=["GPU-a", "GPU-b"], env={"FOO": "bar", "CUDA_VISIBLE_DEVICES": "all"}),
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"  # the job cannot widen its view
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert (env["GPUFLEET_JOB_ID"], env["GPUFLEET_ATTEMPT"], env["FOO"]) == ("e1", "2", "bar")
    assert "GPUFLEET_GPU_SHARE" not in env and "GPUFLEET_AGENT_TOKEN" not in env
    assert env["HOME"] == "/root"


async def test_environment_of_cpu_and_fractional_jobs(rt: ProcessRuntime) -> None:
    cpu = await env_of(rt, ProcessSpec("e2", 1, argv=DUMP_ENV))
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and "GPUFLEET_GPU_SHARE" not in cpu
    frac = await env_of(rt, ProcessSpec("e3", 1, argv=DUMP_ENV, gpus=[0], gpu_milli=250, gpu_memory_mib=20000))
    assert (frac["CUDA_VISIBLE_DEVICES"], frac["GPUFLEET_GPU_SHARE"]) == ("0", "0.250")
    assert frac["GPUFLEET_GPU_MEMORY_LIMIT_MB"] == "20000"


async def test_cancel_lets_the_job_stop_within_grace(rt: ProcessRuntime) -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*a):\n    print('bye', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(30)"
    )
    await rt.start(ProcessSpec("c", 1, argv=py(code)))
    await wait_for_output(rt, "c", b"ready")
    started = time.monotonic()
    outcome = await rt.terminate("c", grace_s=5)
    assert time.monotonic() - started < 2
    assert (outcome.status, outcome.exit_code, outcome.reason) == (
        "cancelled",
        0,
        "cancelled; exited with code 0 after SIGTERM",
    )
    assert b"bye\n" in (await collect(rt, "c"))["stdout"]


async def test_job_ignoring_sigterm_is_killed_after_grace(rt: ProcessRuntime) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + READY + "time.sleep(30)"
    job = await rt.start(ProcessSpec("stubborn", 1, argv=py(code)))
    await wait_for_output(rt, "stubborn", b"ready")
    started = time.monotonic()
    outcome = await rt.terminate("stubborn", grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert (outcome.status, outcome.signal) == ("cancelled", 9)
    assert outcome.reason == "cancelled; killed by SIGKILL after a 0.5 s grace period"
    assert job.pid is not None and not alive(job.pid)


async def test_timeout_outcome(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("slow", 1, argv=["sleep", "30"]))
    # sleep ends at SIGTERM; the grace is long enough that a loaded machine noticing the exit late
    # does not turn it into a SIGKILL (SIGKILL after a grace is the test above).
    outcome = await rt.terminate("slow", grace_s=10, reason="timed_out")
    assert (outcome.status, outcome.signal) == ("timed_out", 15)
    assert outcome.reason == "timed out; stopped by signal 15 (SIGTERM)"
    assert await rt.terminate("slow") == outcome  # an ended job keeps its outcome


async def test_processes_left_behind_are_killed(rt: ProcessRuntime) -> None:
    code = "import subprocess; p = subprocess.Popen(['sleep', '30']); print(p.pid, flush=True)"
    await rt.start(ProcessSpec("orphans", 1, argv=py(code)))
    assert (await rt.wait("orphans")).status == "succeeded"
    orphan = int((await collect(rt, "orphans"))["stdout"])
    await eventually(lambda: not alive(orphan), "the orphan to be killed")


async def test_large_output_arrives_complete_and_in_order(rt: ProcessRuntime) -> None:
    code = "import sys\nw = sys.stdout.buffer.write\nfor i in range(5 * 2**20 // 16): w(b'%015d\\n' % i)"
    await rt.start(ProcessSpec("big", 1, argv=py(code)))
    logs = await collect(rt, "big")
    assert logs["stdout"] == b"".join(b"%015d\n" % i for i in range(5 * 2**20 // 16))
    assert (await rt.wait("big")).status == "succeeded"


async def test_buffer_bound_drops_oldest_with_a_marker(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w", log_chunk_bytes=16 * 1024, log_buffer_bytes=64 * 1024)
    try:
        payload = b"".join(b"%07d\n" % i for i in range(2**20 // 8))
        await rt.start(
            ProcessSpec(
                "flood", 1, argv=py("import sys\nfor i in range(2**20 // 8): sys.stdout.buffer.write(b'%07d\\n' % i)")
            )
        )
        await rt.wait("flood")
        await eventually(lambda: rt.log_stats("flood").read_complete, "the output to be read")
        stats = rt.log_stats("flood")
        assert stats.buffered_bytes <= 64 * 1024 and stats.dropped_bytes > 0
        chunks = await rt.drain_logs("flood", 10 * 2**20)
        marker, data = chunks[0], chunks[1:]
        assert marker.is_marker and (marker.stream, marker.offset, marker.data) == ("stdout", 0, b"")
        assert marker.dropped_bytes == stats.dropped_bytes == data[0].offset
        kept = b"".join(c.data for c in data)
        assert 48 * 1024 <= len(kept) <= 64 * 1024 and kept == payload[marker.dropped_bytes :]
        rt.ack("flood", chunks[-1].seq)
        assert rt.logs_complete("flood")
    finally:
        await rt.close()


async def test_binary_output_roundtrips(rt: ProcessRuntime) -> None:
    code = "import sys; b = bytes(range(256)) * 64; sys.stdout.buffer.write(b); sys.stderr.buffer.write(b[::-1])"
    await rt.start(ProcessSpec("bin", 1, argv=py(code)))
    logs = await collect(rt, "bin")
    assert logs == {"stdout": bytes(range(256)) * 64, "stderr": (bytes(range(256)) * 64)[::-1]}


async def test_unacked_chunks_are_sent_again(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w", log_chunk_bytes=4, log_buffer_bytes=1024)
    try:
        await rt.start(ProcessSpec("re", 1, argv=py("print('aaabbbcccddd', end='')")))
        await rt.wait("re")
        await eventually(lambda: rt.log_stats("re").read_complete, "the output to be read")
        first = await rt.drain_logs("re", 8)
        assert [c.data for c in first] == [b"aaab", b"bbcc"]
        assert await rt.drain_logs("re", 8) == first  # the upload failed: same chunks again
        rt.ack("re", first[0].seq)
        again = await rt.drain_logs("re", 100)
        assert again[0] == first[1] and b"".join(c.data for c in again) == b"bbcccddd"
        rt.ack("re", again[-1].seq)
        assert await rt.drain_logs("re", 100) == [] and rt.logs_complete("re")
        assert rt.log_stats("re").acked_offsets == {"stdout": 12, "stderr": 0}
    finally:
        await rt.close()


def test_buffer_turns_a_sent_chunk_into_a_marker_with_its_seq() -> None:
    buf = LogBuffer("j", 1, chunk_bytes=4, buffer_bytes=8)
    buf.append("stdout", b"aaaabbbb")
    sent = buf.drain(4)
    buf.append("stderr", b"cc")  # over the bound: the oldest (sent) chunk is dropped
    assert buf.drain(100) == [
        LogChunk("j", 1, sent[0].seq, "stdout", b"", 0, dropped_bytes=4),
        LogChunk("j", 1, 2, "stdout", b"bbbb", 4),
        LogChunk("j", 1, 3, "stderr", b"cc", 0),
    ]
    buf.append("stdout", b"dddddd")  # over again: bbbb goes, now handed out, so again in place
    assert [(c.seq, c.stream, c.offset, c.dropped_bytes, c.data) for c in buf.drain(100)] == [
        (1, "stdout", 0, 4, b""),
        (2, "stdout", 4, 4, b""),
        (3, "stderr", 0, 0, b"cc"),
        (4, "stdout", 8, 0, b"dddd"),
        (5, "stdout", 12, 0, b"dd"),
    ]
    buf.ack(5)
    assert buf.empty and buf.acked_offsets == {"stdout": 14, "stderr": 2} and buf.dropped_total == 8


def test_buffer_merges_unsent_drops_per_stream() -> None:
    buf = LogBuffer("j", 1, chunk_bytes=4, buffer_bytes=8)
    buf.append("stdout", b"aaaa")
    buf.append("stderr", b"bb")
    buf.append("stdout", b"cccc")  # drops aaaa
    buf.append("stderr", b"dddd")  # drops bb
    buf.append("stdout", b"e")  # drops cccc, which joins the aaaa gap
    assert [(c.seq, c.stream, c.offset, c.dropped_bytes, c.data) for c in buf.drain(100)] == [
        (2, "stderr", 0, 2, b""),
        (3, "stdout", 0, 8, b""),
        (4, "stderr", 2, 0, b"dddd"),
        (5, "stdout", 8, 0, b"e"),
    ]


async def test_spec_validation_and_unknown_jobs(rt: ProcessRuntime) -> None:
    with pytest.raises(ValueError, match="exactly one of argv or script"):
        ProcessSpec("x", 1, argv=["true"], script="true")
    with pytest.raises(ValueError, match="exactly one GPU"):
        ProcessSpec("x", 1, argv=["true"], gpus=[0, 1], gpu_milli=500)
    with pytest.raises(ValueError, match="invalid environment variable names"):
        ProcessSpec("x", 1, argv=["true"], env={"A=B": "c"})
    with pytest.raises(ValueError, match=r"job id '\.\./x'"):
        ProcessSpec("../x", 1, argv=["true"])
    with pytest.raises(UnknownJobError, match="unknown job: ghost"):
        await rt.wait("ghost")
    await rt.start(ProcessSpec("twice", 1, argv=["sleep", "30"]))
    with pytest.raises(ValueError, match="already running"):
        await rt.start(ProcessSpec("twice", 2, argv=["true"]))
    with pytest.raises(ValueError, match="still running"):
        rt.forget("twice")


async def test_forget_removes_the_jobs_files(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("gone", 1, argv=py("open('out.txt', 'w').write('x')")))
    await rt.wait("gone")
    assert (rt.work_root / "gone.1" / "out.txt").exists()
    rt.forget("gone")
    assert [p for p in rt.state_dir.rglob("*") if p.is_file()] == []
    assert list(rt.work_root.iterdir()) == []
    assert rt.tracked() == []


async def test_recover_after_agent_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    go = tmp_path / "go"
    before = ProcessRuntime(state, work_root=tmp_path / "w")
    waiter = await before.start(
        ProcessSpec(
            "alive",
            1,
            argv=py(
                f"import os, time\nprint('before', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
                "print('after')"
            ),
        )
    )
    ends = await before.start(ProcessSpec("ends", 1, argv=py(READY + "import time; time.sleep(0.3); sys.exit(5)")))
    await before.start(ProcessSpec("stale", 1, argv=["sleep", "30"]))
    chunks = await before.drain_logs("alive", wait_s=5)
    assert [c.data for c in chunks] == [b"before\n"]
    before.ack("alive", chunks[-1].seq)
    saved = json.loads((state / "jobs" / "alive.json").read_text())
    assert saved["pid"] == waiter.pid and saved["create_time"] > 0 and saved["acked_offsets"]["stdout"] == 7
    await before.close()  # the agent goes away; its jobs do not

    assert ends.pid is not None
    await eventually(lambda: not alive(ends.pid), "'ends' to end while the agent is down")

    after = ProcessRuntime(state, work_root=tmp_path / "w")
    try:
        found = {r.job_id: r for r in await after.recover()}
        assert set(found) == {"alive", "ends", "stale"}
        assert found["alive"].alive and found["alive"].pid == waiter.pid and found["alive"].outcome is None
        ended = found["ends"]
        assert not ended.alive and ended.outcome is not None
        assert (ended.outcome.status, ended.outcome.exit_code) == ("failed", 5)  # the status survived
        assert sorted(after.running()) == ["alive", "stale"]

        go.touch()
        assert (await after.wait("alive")).status == "succeeded"
        chunks = []
        while not after.logs_complete("alive"):
            new = await after.drain_logs("alive", wait_s=0.05)
            chunks += new
            if new:
                after.ack("alive", new[-1].seq)
        assert [(c.offset, c.data) for c in chunks] == [(7, b"after\n")]  # acked output is not sent again
        assert (await collect(after, "ends"))["stdout"] == b"ready\n"  # never acked: sent again

        stale = found["stale"]
        outcome = await after.kill_recovered("stale")
        assert outcome.status == "cancelled" and stale.pid is not None
        assert not alive(stale.pid)
    finally:
        for job_id in after.running():
            await after.terminate(job_id, grace_s=0)
        await after.close()


async def test_recover_reports_outcome_recorded_before_restart(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    await rt.start(ProcessSpec("done", 1, argv=["sleep", "30"]))
    await rt.terminate("done", grace_s=5, reason="timed_out")
    await rt.close()
    again = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    [found] = await again.recover()
    assert found.outcome is not None and found.outcome.status == "timed_out" and not found.alive
    assert (await again.wait("done")).status == "timed_out"
    await again.close()


async def test_recover_does_not_touch_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    stranger = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)  # leads its group
    try:
        record = StateRecord(
            "old",
            1,
            stranger.pid,
            create_time=1.0,
            started_at=datetime.now(UTC),
            working_dir=str(tmp_path),
            own_workdir=False,
            terminating=None,
            killed=False,
            grace_s=None,
            acked_offsets={"stdout": 0, "stderr": 0},
            acked_seq=0,
            outcome=None,
            start_ticks=1,
        )
        (tmp_path / "s" / "jobs").mkdir(parents=True)
        (tmp_path / "s" / "jobs" / "old.json").write_text(record.to_json())
        rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
        [found] = await rt.recover()
        assert not found.alive and found.outcome is not None
        assert (found.outcome.status, found.outcome.reason) == ("failed", "agent restarted; exit status lost")
        assert stranger.returncode is None and alive(stranger.pid)  # it was not signalled
        await rt.close()
    finally:
        stranger.kill()
        await stranger.wait()


def test_signal_names() -> None:
    from gpufleet.agent.processes.proc import signal_name

    assert signal_name(signal.SIGTERM) == "15 (SIGTERM)" and signal_name(200) == "200"
