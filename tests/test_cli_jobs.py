"""`gpufleet jobs` and `gpufleet quotas` against a real server: argv after `--`, tables, --json, exit codes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli.common import console
from gpufleet.cli.main import app
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.jobs import JobStatus
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.api.test_jobs_api import finish
from tests.factories import create_host
from tests.liveserver import LiveServer
from tests.pg import PgServer
from tests.scheduling.helpers import scheduler

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


def _server(pg_server: PgServer, db_name: str, **kw: object) -> LiveServer:
    return LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), **kw)  # type: ignore[arg-type]


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = _server(pg_server, db_name)
    server.start()
    yield server
    server.stop()


def _runner(url: str, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("GPUFLEET_URL", url)
    monkeypatch.setenv("GPUFLEET_API_KEY", key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(console, "width", 220)  # a wide terminal: tables are not cut
    runner = CliRunner()

    def run(*args: str, key: str | None = None, stdin: str | None = None) -> tuple[int, str, str]:
        env = {"GPUFLEET_API_KEY": key} if key else None
        result = runner.invoke(app, list(args), env=env, input=stdin)
        return result.exit_code, result.stdout, result.stderr

    return run


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return _runner(live.url, owner.key, tmp_path, monkeypatch)


async def test_submit_takes_argv_after_double_dash_and_shows_jobs(cli: Cli, owner: Tenant, db: Database) -> None:
    await create_host(db, owner.org.id, gpus_spec=(("A100-80GB", 81920),) * 2)
    code, out, err = cli(
        "jobs", "submit", "--name", "train", "--gpu-fraction", "0.25", "--min-memory-gb", "8",
        "--gpu-model", "A100", "--cpus", "2", "--ram-gb", "4", "--priority", "7", "--max-runtime", "2h",
        "--env", "EPOCHS=3", "--label", "team=nlp", "--workdir", "/srv", "--retries", "2", "--json",
        "--", "python", "train.py", "--epochs", "3",
    )  # fmt: skip
    assert code == 0, err
    job = json.loads(out)
    assert job["command"] == ["python", "train.py", "--epochs", "3"] and job["name"] == "train"
    assert job["requirements"] == {
        "gpu_count": 1, "gpu_milli": 250, "min_memory_mb": 8192, "gpu_models": ["A100"],
        "cpu_milli": 2000, "ram_mb": 4096,
    }  # fmt: skip
    assert (job["priority"], job["max_runtime_s"], job["env"], job["labels"], job["working_dir"]) == (
        7, 7200, {"EPOCHS": "3"}, {"team": "nlp"}, "/srv",
    )  # fmt: skip
    assert job["retry"] == {"on_host_loss": True, "on_failure": True, "max_attempts": 3}

    code, out, _ = cli("jobs", "submit", "--gpus", "2", "--", "sleep", "1")
    assert code == 0 and out.startswith("submitted ")
    waiting_id = out.split()[1]
    await scheduler(db).run_once()

    code, out, _ = cli("jobs", "list")
    assert code == 0 and "train" in out and "sleep 1" in out and "allocated" in out and "pending" in out
    code, out, _ = cli("jobs", "list", "--status", "pending", "--json")
    assert [j["id"] for j in json.loads(out)] == [waiting_id]
    code, out, _ = cli("jobs", "list", "--label", "team=nlp", "--json")
    assert [j["id"] for j in json.loads(out)] == [job["id"]]
    code, out, _ = cli("jobs", "show", waiting_id)
    assert code == 0 and "waiting because" in out and "1 GPU free, the job needs 2" in out
    code, out, _ = cli("jobs", "show", job["id"], "--json")
    shown = json.loads(out)
    assert shown["status"] == "allocated" and shown["gpus"][0]["milli"] == 250


async def test_script_from_stdin(cli: Cli) -> None:
    code, out, err = cli("jobs", "submit", "--gpus", "0", "--script", "-", "--json", stdin="echo hello\n")
    assert code == 0, err
    job = json.loads(out)
    assert job["script"] == "echo hello\n" and job["command"] is None and job["requirements"]["gpu_count"] == 0


async def test_events_cancel_and_wait_exit_codes(cli: Cli, owner: Tenant, db: Database) -> None:
    await create_host(db, owner.org.id, gpus_spec=(("T4", 15360),) * 2)
    ids = []
    for _ in range(3):
        code, out, _ = cli("jobs", "submit", "--json", "--", "true")
        ids.append(json.loads(out)["id"])
    await scheduler(db).run_once()
    ok, doomed, pending = ids
    await finish(db, owner.org.id, ok, JobStatus.SUCCEEDED)

    code, out, _ = cli("jobs", "wait", ok)
    assert code == 0 and f"{ok} succeeded" in out
    code, out, _ = cli("jobs", "wait", pending, "--timeout", "0.2", "--json")
    assert code == 4 and json.loads(out)["status"] == "pending"  # 2 is a wrong command line
    code, out, _ = cli("jobs", "cancel", pending)
    assert code == 0 and f"cancelled {pending}" in out
    code, out, _ = cli("jobs", "wait", pending)
    assert code == 3 and "cancelled" in out
    await finish(db, owner.org.id, doomed, JobStatus.FAILED)
    code, out, _ = cli("jobs", "wait", doomed, "--timeout", "5")
    assert code == 3 and "failed" in out

    code, out, _ = cli("jobs", "events", ok, "--json")
    assert [e["type"] for e in json.loads(out)] == ["job.submitted", "job.allocated", "job.running", "job.succeeded"]
    code, out, _ = cli("jobs", "events", ok)
    assert code == 0 and "job.succeeded" in out

    code, _, err = cli("jobs", "cancel", ok)
    assert code == 1 and "409" in err and "already finished" in err and err.strip().count("\n") == 0


async def test_quotas_commands(cli: Cli, owner: Tenant, db: Database) -> None:
    code, out, err = cli("quotas", "set", "4", "--model", "A100", "--json")
    assert code == 0, err
    quota = json.loads(out)
    assert (quota["gpu_model"], quota["max_gpus"], quota["used_gpus"]) == ("A100", 4, 0.0)
    code, out, _ = cli("quotas", "set", "10")
    assert code == 0 and "all GPUs at most 10" in out
    code, out, _ = cli("quotas", "list")
    assert code == 0 and "(all)" in out and "0 of 4" in out
    code, out, _ = cli("quotas", "delete", quota["id"])
    assert code == 0 and quota["id"] in out
    code, out, _ = cli("quotas", "list", "--json")
    assert [q["max_gpus"] for q in json.loads(out)] == [10]
    member = await make_tenant(db, Role.MEMBER, owner.org)
    code, _, err = cli("quotas", "set", "1", key=member.key)
    assert code == 1 and "403" in err and "admin" in err


async def test_errors_are_one_line(cli: Cli) -> None:
    code, out, err = cli("jobs", "submit")
    assert code == 2 and out == "" and "no command" in err
    code, _, err = cli("jobs", "submit", "--gpus", "65", "--", "true")
    assert code == 1 and "422" in err and "gpu_count" in err and err.strip().count("\n") == 0
    code, _, err = cli("jobs", "submit", "--gpus", "2", "--gpu-fraction", "0.5", "--", "true")
    assert code == 2 and err.count("\n") == 1 and "--gpus or --gpu-fraction, not both" in err
    code, _, err = cli("jobs", "submit", "--gpu-fraction", "1.5", "--", "true")
    assert code == 2 and "--gpu-fraction" in err
    code, _, err = cli("jobs", "submit", "--max-runtime", "soon", "--", "true")
    assert code == 1 and "max_runtime" in err
    code, _, err = cli("jobs", "submit", "--env", "NOVALUE", "--", "true")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = cli("jobs", "show", str(uuid.uuid4()))
    assert code == 1 and "404" in err and err.strip().count("\n") == 0


@pytest.fixture
def live_scheduling(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = _server(pg_server, db_name, background=True, settings={"scheduler_tick_s": 0.2})
    server.start()
    yield server
    server.stop()


async def test_submit_wait_with_a_running_scheduler(
    live_scheduling: LiveServer, owner: Tenant, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_host(db, owner.org.id, gpus_spec=(("T4", 15360),))
    cli = _runner(live_scheduling.url, owner.key, tmp_path, monkeypatch)
    # No host could ever hold two GPUs: the server's scheduler fails it within a cycle.
    code, out, err = cli("jobs", "submit", "--gpus", "2", "--wait", "--", "true")
    assert code == 3, err
    assert "allocation_failed" in out and "no host could ever hold 2" in out
