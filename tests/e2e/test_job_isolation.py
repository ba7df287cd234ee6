"""A job cannot read anything of its agent's (credential, state, logs) nor of another job's
(work dir, environment), and inherits none of the agent's secrets; a model's replica still serves
as a job user who cannot run the agent's Python: real agent, server and processes."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.agent.runner import base_env
from gpufleet.agent.runner.envs import PipOptions
from tests.agent.test_runner_envs import make_wheel
from tests.e2e.conftest import Cluster, until
from tests.e2e.test_model_runner import EXAMPLES, WITH_PACKAGE, model_dir, predict, push

ROOT = os.geteuid() == 0


@pytest.fixture
def base() -> Iterator[Path]:
    # Not tmp_path (its parent is 0700): only the agent's own permissions may stand in the way here.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-iso-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


ATTACK = r"""
try() { if out=$("$@" 2>&1); then echo "READ $*: $out"; else echo "DENIED $*"; fi; }
echo "uid $(id -u)"
try cat ../../../host-credential.json
try cat ../host-credential.json
try cat "$STATE/host-credential.json"
try ls "$STATE"
try cat "$STATE/logs/$VICTIM/1.stdout"
try ls "$VICTIM_WORK"
try cat "$VICTIM_WORK/secret.txt"
for p in /proc/[0-9]*; do
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -q VICTIM_TOKEN; then echo "READ environ of $p"; fi
  if [ -r "$p/cwd/secret.txt" ]; then echo "READ cwd of $p"; fi
done
env | sed 's/^/ENV /'
echo finished
"""


async def test_a_job_reads_nothing_of_the_agent_nor_of_another_job(
    cluster: Cluster, base: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("GPUFLEET_JOIN_TOKEN", "GPUFLEET_API_KEY", "GPUFLEET_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, f"leaked-{name}")  # the agent's environment: none of it may reach a job
    state = base / "agent"
    state.mkdir(mode=0o755)  # made loose by an older agent or by hand: tightened at start
    running = await cluster.start_agent(state_dir=state, job_user="auto")
    if not ROOT:  # a non-root agent cannot switch users: it must say so at start
        assert "jobs run as this agent's own user" in caplog.text
        return
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    credential = (state / "host-credential.json").read_text()
    assert "gfh_" in credential

    victim = await cluster.submit(
        script="echo s3cret > secret.txt; echo ready; exec sleep 60", env={"VICTIM_TOKEN": "tok-of-the-victim"}
    )
    await cluster.wait(victim, "running")
    await until(lambda: _has_output(cluster, victim, b"ready"), what="the victim's first line")
    assert running.agent.jobs is not None
    victim_work = running.agent.jobs.runtime.work_root / f"{victim}.1"
    assert state not in victim_work.parents
    work_stat = victim_work.stat()
    assert stat.S_IMODE(work_stat.st_mode) == 0o700 and work_stat.st_uid != 0

    attacker = await cluster.submit(
        script=ATTACK, env={"STATE": str(state), "VICTIM": victim, "VICTIM_WORK": str(victim_work)}
    )
    job = await cluster.wait(attacker)
    out = (await cluster.logs(attacker))["stdout"].decode()
    assert job["status"] == "succeeded" and out.endswith("finished\n"), (job, out)
    uid = int(out.split("uid ", 1)[1].split("\n", 1)[0])
    assert uid not in (0, work_stat.st_uid)  # its own user: neither root nor the victim's
    assert "READ" not in out, out
    assert out.count("DENIED") == 7, out
    assert credential.split('"credential": "')[1].split('"')[0] not in out
    assert "s3cret" not in out and "tok-of-the-victim" not in out
    assert "leaked-" not in out, out
    env = dict(line[4:].split("=", 1) for line in out.splitlines() if line.startswith("ENV ") and "=" in line)
    assert env["HOME"] == str(running.agent.jobs.runtime.work_root / f"{attacker}.1")
    assert env["USER"].startswith("gpufleet-job-")

    r = await cluster.api.post(f"/v1/jobs/{victim}/cancel")
    assert r.status_code == 200, r.text
    assert (await cluster.wait(victim))["status"] == "cancelled"
    await until(lambda: not victim_work.exists(), what="the victim's work dir to be removed")


async def _has_output(cluster: Cluster, job_id: str, data: bytes) -> bool:
    return data in (await cluster.logs(job_id))["stdout"]


async def test_replicas_serve_as_job_users_who_cannot_run_the_agents_python(cluster: Cluster, base: Path) -> None:
    # The tests' interpreter is a venv over a pyenv Python under root's 0700 home here: job users can
    # neither run it nor read its site-packages, as with many real agents.
    import sys

    closed = not base_env.as_job_user(sys.executable, "import cog").ok
    assert closed or not ROOT  # what this test is about (else it proves only the ordinary case)
    wheels = base / "wheels"
    make_wheel(wheels, value=77)
    env_dir = base / "envs"
    running = await cluster.start_agent(
        state_dir=base / "agent",
        job_user="auto",
        env_dir=env_dir,
        pip=PipOptions(no_index=True, find_links=(str(wheels),)),
    )
    await push(cluster, "echo", EXAMPLES / "echo")
    p = await predict(cluster, "echo", {"text": "hi", "repeat": 2})
    assert (p["status"], p["output"], p["error"]) == ("succeeded", "hi hi", None), p
    # With python_packages: a venv over the same interpreter, seeing the same copy of cog.
    await push(cluster, "pkg", model_dir(cluster.tmp, "pkg", WITH_PACKAGE, ["gftiny==1.0"]))
    p = await predict(cluster, "pkg", {})
    assert (p["status"], p["output"]) == ("succeeded", 77), p

    jobs = running.agent.jobs
    assert jobs is not None and jobs.models is not None
    replicas = list(jobs.models.replicas.values())
    assert len(replicas) == 2
    for rep in replicas:
        _, uid, _ = jobs.runtime.process_of(rep.key)
        assert (uid not in (None, 0)) is ROOT, uid  # each worker runs as its job user
    copies = list((env_dir / "base-site").iterdir())
    assert len(copies) == (1 if closed else 0)  # copied once, for both
    if closed:
        (venv,) = (env_dir / "venvs").iterdir()
        pth = next(venv.rglob("_gpufleet_agent.pth")).read_text()
        assert pth == f"{copies[0]}\n"
    await running.close()  # its jobs stop before `base` (their state dir) goes
