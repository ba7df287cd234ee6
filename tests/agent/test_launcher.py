"""The launcher (processes/launcher.py): jobs' supervisors forked by one long-lived process, with
real processes; the per-job supervisor when no launcher can be had."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from gpufleet.agent.processes import launcher as runtime_launcher
from gpufleet.agent.processes.runtime import ProcessRuntime, ProcessSpec
from gpufleet.agent.processes.users import SlotUsers
from tests.agent.test_job_users import base  # noqa: F401 - the fixture: a work root job users can reach
from tests.agent.test_runtime import READY, alive, eventually, py, wait_for_output


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(tmp_path / "state", work_root=tmp_path / "work")
    yield runtime
    for job_id in runtime.running():
        await runtime.terminate(job_id, grace_s=0)
    await runtime.close()


def launcher_pid(rt: ProcessRuntime) -> int:
    pid = rt._launcher.pid
    assert pid is not None, "no launcher is running"
    return pid


async def test_a_job_runs_under_a_supervisor_forked_by_the_launcher(rt: ProcessRuntime) -> None:
    go = rt.state_dir.parent / "go"
    job = await rt.start(
        ProcessSpec(
            "a", 1, argv=py(READY + f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)")
        )
    )
    await wait_for_output(rt, "a", b"ready")
    assert job.pid is not None
    supervisor = psutil.Process(job.pid)
    assert supervisor.ppid() == launcher_pid(rt) != os.getpid()
    assert os.getsid(job.pid) == job.pid and os.getpgid(job.pid) == job.pid  # the job's own session
    [child] = supervisor.children()
    assert os.getpgid(child.pid) == job.pid
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{job.pid}/fd"))
    assert fds == [0, 1, 2]  # nothing of the launcher's or the agent's leaks into the supervisor
    assert os.readlink(f"/proc/{job.pid}/fd/1").endswith("a/1.stdout")
    assert os.readlink(f"/proc/{job.pid}/fd/0") == os.devnull
    go.touch()
    assert (await rt.wait("a")).status == "succeeded"
    await eventually(lambda: not alive(job.pid), "the launcher to reap the supervisor")
    assert psutil.Process(launcher_pid(rt)).memory_info().rss < 64 * 1024 * 1024


async def test_exit_codes_and_signals_are_recorded(rt: ProcessRuntime) -> None:
    await rt.start(ProcessSpec("code", 1, argv=["sh", "-c", "exit 7"]))
    await rt.start(ProcessSpec("sig", 1, argv=["sh", "-c", "kill -SEGV $$"]))
    # The job kills its own group, supervisor included: no exit file, the supervisor's own
    # wait status (which the launcher reaped) says what happened.
    await rt.start(ProcessSpec("group", 1, argv=["sh", "-c", "kill -9 0"]))
    code, sig, group = [await rt.wait(j) for j in ("code", "sig", "group")]
    assert (code.status, code.exit_code) == ("failed", 7)
    assert (sig.status, sig.signal) == ("failed", signal.SIGSEGV)
    assert (group.status, group.signal, group.reason) == ("failed", 9, "killed by signal 9 (SIGKILL)")


async def test_sigterm_to_the_group_stops_the_job_and_the_supervisor_records_it(rt: ProcessRuntime) -> None:
    job = await rt.start(ProcessSpec("t", 1, argv=py(READY + "import time; time.sleep(30)")))
    await wait_for_output(rt, "t", b"ready")
    assert job.pid is not None and psutil.Process(job.pid).ppid() == launcher_pid(rt)
    outcome = await rt.terminate("t", grace_s=10)
    assert (outcome.status, outcome.signal) == ("cancelled", signal.SIGTERM)
    assert outcome.reason == "cancelled; stopped by signal 15 (SIGTERM)"  # from the exit file: the supervisor lived


async def test_a_dead_launcher_loses_no_outcome_and_the_next_job_gets_a_new_one(rt: ProcessRuntime) -> None:
    go = rt.state_dir.parent / "go"
    wait_go = f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    running = await rt.start(ProcessSpec("running", 1, argv=py(READY + wait_go + "sys.exit(4)")))
    stubborn = await rt.start(ProcessSpec("stubborn", 1, argv=["sleep", "30"]))
    await wait_for_output(rt, "running", b"ready")
    first = launcher_pid(rt)
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: rt._launcher.pid is None, "the agent to notice the launcher's death")
    await eventually(lambda: not alive(first), "the dead launcher to be reaped")
    assert alive(running.pid) and alive(stubborn.pid)  # supervisors live in sessions of their own

    go.touch()
    outcome = await rt.wait("running")
    assert (outcome.status, outcome.exit_code) == ("failed", 4)
    stopped = await rt.terminate("stubborn", grace_s=5)  # its group is still found and signalled
    assert (stopped.status, stopped.signal) == ("cancelled", signal.SIGTERM)

    after = await rt.start(ProcessSpec("after", 1, argv=["true"]))
    assert after.pid is not None and rt._launcher.pid not in (None, first)
    assert (await rt.wait("after")).status == "succeeded"


async def test_a_stuck_launcher_is_replaced_and_the_job_runs_once(
    rt: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_launcher, "ANSWER_TIMEOUT_S", 0.5)
    ran = rt.state_dir.parent / "ran"
    await rt.start(ProcessSpec("warm", 1, argv=["true"]))
    stuck = launcher_pid(rt)
    os.kill(stuck, signal.SIGSTOP)
    job = await rt.start(ProcessSpec("once", 1, argv=["sh", "-c", f"echo x >> {ran}"]))
    assert job.outcome is None and job.pid is not None
    assert (await rt.wait("once")).status == "succeeded"
    await eventually(lambda: not alive(stuck), "the stuck launcher to be killed and reaped")
    assert ran.read_text() == "x\n"  # started by the fallback, not also by the launcher
    assert (await rt.wait("warm")).status == "succeeded"
    await rt.start(ProcessSpec("next", 1, argv=["true"]))
    assert rt._launcher.pid not in (None, stuck)
    assert (await rt.wait("next")).status == "succeeded"


async def test_jobs_forked_by_the_launcher_are_adopted_after_an_agent_restart(tmp_path: Path) -> None:
    go = tmp_path / "go"
    before = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    job = await before.start(
        ProcessSpec(
            "j",
            1,
            argv=py(
                READY + f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nsys.exit(3)"
            ),
        )
    )
    await wait_for_output(before, "j", b"ready")
    launcher = launcher_pid(before)
    await before.close()  # the launcher goes with the agent; the job does not
    await eventually(lambda: not alive(launcher), "the launcher to exit with its agent")
    assert alive(job.pid)

    after = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    try:
        [found] = await after.recover()
        assert found.alive and found.pid == job.pid
        go.touch()
        outcome = await after.wait("j")
        assert (outcome.status, outcome.exit_code) == ("failed", 3)
    finally:
        await after.close()


async def test_without_a_launcher_each_job_gets_a_supervisor_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A launcher that cannot run: it exits without answering, and the job starts anyway.
    monkeypatch.setattr(runtime_launcher, "SHIM_PATH", tmp_path / "missing.py")
    rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    try:
        for i in range(4):
            job = await rt.start(ProcessSpec(f"j{i}", 1, argv=["sh", "-c", f"exit {i}"]))
            assert job.pid is not None and job.outcome is None
            assert (await rt.wait(f"j{i}")).exit_code == i
        assert rt._launcher._disabled  # given up after a few tries: no interpreter wasted per job
        job = await rt.start(ProcessSpec("sig", 1, argv=py(READY + "import time; time.sleep(30)")))
        await wait_for_output(rt, "sig", b"ready")
        assert job.pid is not None and psutil.Process(job.pid).ppid() == os.getpid()
        assert (await rt.terminate("sig", grace_s=10)).signal == signal.SIGTERM
    finally:
        await rt.close()


async def test_a_job_user_through_the_launcher_holds_its_slot_and_cannot_touch_the_supervisor(base: Path) -> None:  # noqa: F811
    if os.geteuid() != 0:
        return  # job users need a root agent (tests/agent/test_job_users.py covers the warning)
    locks = base / "locks"
    rt = ProcessRuntime(base / "state", users=SlotUsers(locks), work_root=base / "work")
    out = base / "out"
    out.mkdir()
    out.chmod(0o1777)
    script = f"umask > {out}/umask; id -u > {out}/uid; ls -l /proc/$$/fd/ > {out}/fds; kill -9 $PPID; exec sleep 30"
    pid = None
    try:
        job = await rt.start(ProcessSpec("u", 1, script=script))
        pid = job.pid
        assert job.pid is not None
        await eventually(lambda: (out / "fds").exists() and (out / "fds").read_text() != "", "the job to start")
        supervisor = psutil.Process(job.pid)
        assert supervisor.ppid() == launcher_pid(rt) and supervisor.uids().real == 0  # it stays root
        assert int((out / "uid").read_text()) != 0 and (out / "umask").read_text().strip() == "0077"
        assert os.readlink(f"/proc/{job.pid}/fd/3") == str(locks / "0")  # the slot lock, held by the supervisor
        assert "/dev/null" in (out / "fds").read_text() and str(locks) not in (out / "fds").read_text()  # not the job's
        assert alive(job.pid)  # the job could not kill it
        await rt.close()  # the agent lets go of its copy of the lock; the supervisor keeps the slot taken
        fd = os.open(locks / "0", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        await rt.close()
