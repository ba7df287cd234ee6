"""The real `gpufleet` binary against a live server: short ids, -q, the sketch's fields, refused flag
combinations, one-line (or JSON) errors and their exit codes, global options, wording."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gpufleet.db.pool import Database
from tests.api.conftest import Tenant
from tests.factories import create_host
from tests.liveserver import LiveServer
from tests.scheduling.helpers import scheduler

BIN = str(Path(sys.executable).parent / "gpufleet")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def gf(live: LiveServer, owner: Tenant, tmp_path: Path) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    base.update(GPUFLEET_CONFIG_DIR=str(tmp_path / "cfg"), COLUMNS="250", NO_COLOR="1")

    def run(*args: str, env: dict[str, str] | None = None, creds: bool = True) -> subprocess.CompletedProcess[str]:
        full = {**base, **({"GPUFLEET_URL": live.url, "GPUFLEET_API_KEY": owner.key} if creds else {}), **(env or {})}
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=full, timeout=60)

    return run


def one_line(err: str) -> bool:
    return err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err


async def _set_id(db: Database, old: str, new: uuid.UUID) -> None:
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set id = $2 where id = $1", uuid.UUID(old), new)


async def test_short_ids_quiet_submit_and_ambiguous_prefixes(gf: Run, owner: Tenant, db: Database) -> None:
    host, gpus = await create_host(db, owner.org.id, name="box", gpus_spec=(("T4", 15360),))
    r = gf("jobs", "submit", "-q", "--gpus", "0", "--", "true")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert r.stdout == job_id + "\n" and uuid.UUID(job_id)  # the id alone: ID=$(gpufleet jobs submit -q ...)

    # tables show 8 characters, and those 8 are accepted back
    r = gf("jobs", "list")
    assert job_id[:8] in r.stdout and job_id not in r.stdout
    assert job_id in gf("jobs", "list", "--wide").stdout
    assert json.loads(gf("jobs", "list", "--json").stdout)[0]["id"] == job_id
    r = gf("jobs", "show", job_id[:8], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == job_id
    r = gf("hosts", "show", str(host.id)[:6], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "box"
    r = gf("gpus", "show", str(gpus[0].id)[:5].upper(), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == str(gpus[0].id)

    # two jobs starting abcd: an ambiguous prefix lists them, one line each, and fails
    a, b = (uuid.UUID(f"abcd0000-0000-4000-8000-00000000000{i}") for i in (1, 2))
    await _set_id(db, job_id, a)
    second = gf("jobs", "submit", "-q", "--gpus", "0", "--name", "second", "--", "true").stdout.strip()
    await _set_id(db, second, b)
    r = gf("jobs", "cancel", "abcd")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert "ambiguous" in lines[0] and len(lines) == 3 and str(a) in lines[1] and str(b) in lines[2]
    r = gf("jobs", "cancel", "abcd", "--json")
    err = json.loads(r.stderr)
    assert r.returncode == 1 and err["status"] == 409 and len(err["matches"]) == 2
    r = gf("jobs", "cancel", "abcd0000-0000-4000-8000-000000000002")
    assert r.returncode == 0 and f"cancelled {b}" in r.stdout
    r = gf("jobs", "show", "dddd")
    assert r.returncode == 1 and one_line(r.stderr) and "no job has an id starting with 'dddd'" in r.stderr
    for bad in ("abc", "zzzzzzzz", "ab", "0" * 33):  # not an id: a wrong command line, nothing sent
        r = gf("jobs", "show", bad)
        assert r.returncode == 2 and one_line(r.stderr) and "4 to 32 hex digits" in r.stderr, (bad, r.stderr)
    r = gf("orgs", "show", "zz")
    assert r.returncode == 2 and one_line(r.stderr) and "4 to 32 hex digits" in r.stderr, r.stderr


async def test_every_field_of_the_sketchs_job_and_refused_combinations(gf: Run) -> None:
    r = gf(
        "jobs", "submit", "--name", "Text Generation", "--model-type", "text", "--min-memory-gb", "8",
        "--gpu-type", "NVIDIA A100", "--max-attempts", "5", "--no-requeue-on-host-loss", "--json", "--", "true",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert (job["name"], job["model_type"], job["requirements"]["gpu_models"]) == (
        "Text Generation",
        "text",
        ["NVIDIA A100"],
    )
    assert job["requirements"]["min_memory_mb"] == 8192
    assert job["retry"] == {"on_host_loss": False, "on_failure": False, "max_attempts": 5}
    out = gf("jobs", "show", job["id"][:8]).stdout  # in the unit it was given in
    assert "8 GB per GPU" in out and "MiB" not in out, out

    refused = [
        ("--gpus", "2", "--gpu-fraction", "0.5"),
        ("--gpus", "0", "--gpu-fraction", "0.5"),
        ("--gpus", "0", "--gpu-model", "A100"),
        ("--gpus", "0", "--min-memory-gb", "8"),
        ("--retries", "2", "--max-attempts", "5"),
        ("-q", "--json"),
        ("--gpu-fraction", "1.5"),
    ]
    for flags in refused:
        r = gf("jobs", "submit", *flags, "--", "true")
        assert r.returncode == 2 and one_line(r.stderr) and r.stdout == "", (flags, r.stderr)
    assert gf("jobs", "list", "--json").stdout.count('"id"') == 1  # nothing was submitted


async def test_errors_exit_codes_and_global_options(gf: Run, live: LiveServer, owner: Tenant) -> None:
    r = gf("jobs", "submit", "--bogus", "--", "true")
    assert (
        r.returncode == 2 and one_line(r.stderr) and "--bogus" in r.stderr and "gpufleet jobs submit --help" in r.stderr
    )
    r = gf("jobs", "show", "--json")  # a usage error, as JSON
    assert r.returncode == 2 and json.loads(r.stderr) == {
        "error": json.loads(r.stderr)["error"], "status": None, "exit_code": 2
    }  # fmt: skip
    r = gf("jobs", "show", str(uuid.uuid4()), "--json")
    assert r.returncode == 1 and json.loads(r.stderr)["status"] == 404 and r.stdout == ""
    r = gf("jobs", "show", str(uuid.uuid4()))
    assert r.returncode == 1 and one_line(r.stderr) and "404" in r.stderr

    pending = gf("jobs", "submit", "-q", "--gpus", "1", "--", "true").stdout.strip()  # no host: it waits
    r = gf("jobs", "wait", pending[:8], "--timeout", "0.1")
    assert r.returncode == 4, r.stderr  # not 2: that is a wrong command line

    r = gf("whoami")  # the organization by name and slug, not only its id
    assert r.returncode == 0 and f"{owner.org.name} ({owner.org.slug})" in r.stdout.splitlines()[0], r.stdout
    r = gf("--version")
    assert r.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+\S*\n", r.stdout)
    # --url/--api-key stand in for the environment, before or after the command
    r = gf("jobs", "list", "--json", "--url", live.url, "--api-key", owner.key, creds=False)
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 1, r.stderr
    r = gf("--url", live.url, "--api-key", "gfk_wrong", "whoami", creds=False)
    assert r.returncode == 1 and one_line(r.stderr) and "401" in r.stderr
    r = gf("whoami", creds=False, env={"GPUFLEET_URL": "http://127.0.0.1:9"})
    assert r.returncode == 1 and one_line(r.stderr) and "no API key" in r.stderr
    r = gf("whoami", "--url", "http://127.0.0.1:9", "--api-key", "k", creds=False)
    assert r.returncode == 1 and one_line(r.stderr) and "cannot reach gpufleet at http://127.0.0.1:9" in r.stderr


async def test_wording_gpus_attempts_and_shares(gf: Run, owner: Tenant, db: Database) -> None:
    await create_host(db, owner.org.id, name="four", gpus_spec=(("A100-80GB", 81920),) * 4)
    big = json.loads(gf("jobs", "submit", "--gpus", "8", "--json", "--", "true").stdout)["id"]
    share = json.loads(gf("jobs", "submit", "--gpu-fraction", "0.25", "--retries", "2", "--json", "--", "true").stdout)
    plain = gf("jobs", "submit", "-q", "--gpus", "0", "--", "true").stdout.strip()
    await scheduler(db).run_once()

    out = gf("jobs", "show", big[:8]).stdout
    assert "no host could ever hold 8 GPUs, even if empty" in out and "four: has 4 GPUs, the job needs 8" in out
    assert "4 of 8" not in out and "attempt" not in out  # no retries asked for: no "attempt 1 of 3"
    out = gf("jobs", "show", share["id"][:8]).stdout
    assert "attempt" in out and "1 of 3" in out and "0.25 GPU" in out and "milli" not in out.lower()
    out = gf("gpus", "list").stdout
    assert "0.25 GPU" in out and "Milli" not in out
    out = gf("jobs", "list").stdout
    assert "0.25 GPU" in out and "8 GPUs" in out

    async with db.system_transaction() as conn:  # the agent's host was lost once: the job was queued again
        await conn.execute("update jobs set attempt = 2 where id = $1", uuid.UUID(plain))
    out = gf("jobs", "show", plain[:8]).stdout
    assert "2 (queued again after its host was lost)" in out and "of 3" not in out


async def test_ids_in_tables_can_be_pasted_back_at_80_columns(gf: Run, owner: Tenant, db: Database) -> None:
    host, gpus = await create_host(
        db, owner.org.id, name="a-host-with-a-rather-long-name", gpus_spec=(("A100-80GB", 81920),) * 2
    )
    job = gf(
        "jobs", "submit", "-q", "--gpus", "0", "--name", "a job with a long name to squeeze", "--", "true"
    ).stdout.strip()
    narrow = {"COLUMNS": "80"}
    tables = {
        "gpus list": ([str(g.id) for g in gpus], gf("gpus", "list", env=narrow).stdout),
        "hosts list": ([str(host.id)], gf("hosts", "list", env=narrow).stdout),
        "jobs list": ([job], gf("jobs", "list", env=narrow).stdout),
        "hosts show": ([str(g.id) for g in gpus], gf("hosts", "show", str(host.id)[:8], env=narrow).stdout),
    }
    for what, (ids, out) in tables.items():
        assert max(map(len, out.splitlines())) <= 80, (what, out)
        for full in ids:
            assert re.search(rf"\b{full[:8]}\b", out), (what, full, out)  # 8 characters, whole, on one line
    for args, ids in ((("hosts", "list"), [str(host.id)]), (("gpus", "list"), [str(g.id) for g in gpus])):
        out = gf(*args, "--wide", env=narrow).stdout
        for full in ids:
            assert full in out, (args, out)
        assert "…" not in out, out


async def test_logs_follow_of_a_job_that_did_not_succeed_says_so_and_exits_3(gf: Run) -> None:
    job = gf("jobs", "submit", "-q", "--gpus", "1", "--", "true").stdout.strip()  # no host: it waits
    assert gf("jobs", "cancel", job[:8]).returncode == 0
    r = gf("jobs", "logs", "-f", job[:8])
    assert r.returncode == 3 and r.stdout == "" and one_line(r.stderr), r
    assert r.stderr.startswith(f"[gpufleet] job {job} cancelled"), r.stderr
    r = gf("jobs", "logs", job[:8])  # without -f: the output as it is, exit 0
    assert r.returncode == 0 and r.stderr == "", r
