"""Who jobs run as (processes/users.py) and the ``interrupted`` outcome, with real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpufleet.agent.processes.proc import StateRecord
from gpufleet.agent.processes.runtime import ProcessRuntime, ProcessSpec
from gpufleet.agent.processes.users import JobUserError, NamedUser, SlotUsers, hidden_from_jobs, job_users
from tests.agent.test_runtime import alive, eventually

ROOT = os.geteuid() == 0


@pytest.fixture
def base() -> Iterator[Path]:
    # Not tmp_path, whose parent is 0700: job users must be able to reach the work root.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-users-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_jobs_as_the_agents_own_user_are_announced_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    users = job_users("agent", state_dir=tmp_path / "state")
    assert not users.separate and users.claim() is None
    [record] = [r for r in caplog.records if r.levelname == "WARNING"]
    message = record.getMessage()
    assert "jobs run as this agent's own user" in message and str(tmp_path / "state") in message
    assert "\n" not in message


def test_a_named_job_user_must_exist_must_not_be_root_and_needs_a_root_agent(tmp_path: Path) -> None:
    if not ROOT:
        with pytest.raises(JobUserError, match="needs an agent running as root"):
            job_users("nobody", state_dir=tmp_path)
        return
    with pytest.raises(JobUserError, match="must not run as root"):
        NamedUser("root")
    with pytest.raises(JobUserError, match="no such user"):
        job_users("no-such-user-here", state_dir=tmp_path)
    nobody = job_users("nobody", state_dir=tmp_path).claim()
    assert nobody is not None and nobody.name == "nobody" and nobody.uid != 0


def test_the_work_root_is_never_inside_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(JobUserError, match="must not be inside the state directory"):
        ProcessRuntime(tmp_path / "state", work_root=tmp_path / "state" / "work")


async def test_each_running_job_has_its_own_user_and_nothing_of_it_outlives_the_job(base: Path) -> None:
    if not ROOT:
        assert not job_users("auto", state_dir=base).separate  # warned about instead (test above)
        return
    rt = ProcessRuntime(base / "state", users=SlotUsers(), work_root=base / "work")
    out = base / "out"
    out.mkdir()
    out.chmod(0o1777)  # where the jobs say who they are
    try:
        first = await rt.start(ProcessSpec("first", 1, script=f"id -u > {out}/first.uid; exec sleep 30"))
        # Leaves a process behind outside its process group, then ends.
        await rt.start(
            ProcessSpec(
                "second",
                1,
                script=(f"id -u > {out}/second.uid; setsid sleep 300 & echo $! > {out}/escaped.pid; exit 0"),
            )
        )
        assert (await rt.wait("second")).status == "succeeded"
        await eventually(lambda: (out / "first.uid").exists(), "the first job to start")
        uids = {int((out / f"{name}.uid").read_text()) for name in ("first", "second")}
        assert len(uids) == 2 and 0 not in uids
        escaped = int((out / "escaped.pid").read_text())
        await eventually(lambda: not alive(escaped), "the second job's leftover to be killed")
        assert alive(first.pid)  # only the ended job's user was swept
    finally:
        for job_id in rt.running():
            await rt.terminate(job_id, grace_s=0)
        await rt.close()


async def test_what_a_job_leaves_in_shared_temp_folders_goes_with_it(base: Path) -> None:
    if not ROOT:
        return  # without job users every job is the agent's own user: nothing to keep apart (warned at start)
    rt = ProcessRuntime(base / "state", users=SlotUsers(), work_root=base / "work")
    tag = base.name
    left = [Path(f"/tmp/{tag}-secret"), Path(f"/dev/shm/{tag}-secret"), Path(f"/tmp/{tag}-dir")]
    script = f"umask 077; echo s > {left[0]}; echo s > {left[1]}; mkdir {left[2]} && echo s > {left[2]}/f"
    try:
        await rt.start(ProcessSpec("leaves", 1, script=script))
        assert (await rt.wait("leaves")).status == "succeeded"
        # The next job of the same slot user (another member's, perhaps) must not find them.
        await eventually(lambda: not any(p.exists() for p in left), "the job's temporary files to be removed")
    finally:
        await rt.close()
        for p in left:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


async def test_reboot_turns_a_lost_job_into_interrupted(tmp_path: Path) -> None:
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    state = tmp_path / "s"
    (state / "jobs").mkdir(parents=True)
    for job_id in ("lost", "done"):
        record = StateRecord(
            job_id,
            1,
            gone.pid,
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
            boot_id="an-earlier-boot",
        )
        (state / "jobs" / f"{job_id}.json").write_text(record.to_json())
    (state / "jobs" / "done.1.exit").write_text("exit 0\n")
    rt = ProcessRuntime(state, work_root=tmp_path / "work")
    found = {r.job_id: r.outcome for r in await rt.recover()}
    lost, done = found["lost"], found["done"]
    assert lost is not None and (lost.status, lost.reason) == ("interrupted", "interrupted: the host restarted")
    assert done is not None and done.status == "succeeded"  # it ended on its own before the reboot
    await rt.close()


async def test_a_job_stopped_with_its_agent_is_interrupted(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "s", work_root=tmp_path / "w")
    job = await rt.start(ProcessSpec("j", 1, argv=["sleep", "30"]))
    outcome = await rt.terminate("j", grace_s=5, reason="interrupted")
    assert (outcome.status, outcome.signal) == ("interrupted", 15)
    assert outcome.reason == "interrupted: the agent stopped; stopped by signal 15 (SIGTERM)"
    assert not alive(job.pid)
    await rt.close()


def test_a_path_and_python_closed_to_job_users_are_announced_in_one_line(tmp_path: Path) -> None:
    closed = tmp_path / "home" / "shims"  # like pyenv's shims under root's 0700 home
    closed.mkdir(parents=True)
    (tmp_path / "home").chmod(0o700)
    (closed / "python").write_text("#!/bin/sh\n")
    (closed / "python").chmod(0o755)
    users = SlotUsers.__new__(SlotUsers)  # only its kind matters here: nothing is created
    message = hidden_from_jobs(users, f"{closed}:/usr/bin:/bin", str(closed / "python"))
    assert message is not None and "\n" not in message
    assert f"the directories {closed} of this agent's PATH nor its Python ({closed / 'python'})" in message
    assert "jobs run with PATH=/usr/bin:/bin, where" in message and "python is not found" in message
    assert "--job-user" in message and "outside a 0700 home" in message
    assert hidden_from_jobs(users, "/usr/bin:/bin", "/bin/sh") is None


async def test_a_jobs_path_keeps_only_what_its_user_can_search(base: Path) -> None:
    if not ROOT:
        return  # without job users the job's PATH is the agent's (checked in test_runtime.py)
    closed = base / "root-home" / "shims"
    closed.mkdir(parents=True)
    (base / "root-home").chmod(0o700)
    (closed / "sh").symlink_to("/bin/sh")  # would shadow /bin/sh, if the job's user could reach it
    out = base / "out"
    out.mkdir()
    out.chmod(0o1777)
    env = {"PATH": f"{closed}:/usr/bin:/bin"}
    rt = ProcessRuntime(base / "state", users=SlotUsers(), work_root=base / "work", base_env=env)
    try:
        await rt.start(ProcessSpec("p", 1, argv=["sh", "-c", f'echo "$PATH" > {out}/path']))
        outcome = await rt.wait("p")
        assert outcome.status == "succeeded", outcome
        assert (out / "path").read_text() == "/usr/bin:/bin\n"
    finally:
        await rt.close()
