"""CI's proof of which database each leg ran on (tests/dbleg.py), including that it fails when broken."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import dbleg
from tests.pg import PgServer

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = dbleg.Leg("PostgreSQL 18.4 on x86_64", None, None, "")
SERVER = dbleg.Leg("PostgreSQL 15.20 (Debian)", "127.0.0.1", 5432, "localhost")
URL = "postgresql://postgres@127.0.0.1:5432/postgres"


async def test_the_record_comes_from_the_server(pg_server: PgServer) -> None:
    leg = await dbleg.record(pg_server.base_dsn)
    assert leg.version.startswith("PostgreSQL ")
    # Whichever leg this is, the record says so, from the server's own answers.
    assert leg.embedded is (pg_server.embedded is not None)
    expect = "embedded" if leg.embedded else "server"
    dbleg.check(expect, leg, os.environ.get("GPUFLEET_TEST_DATABASE_URL"))
    other = "server" if leg.embedded else "embedded"
    with pytest.raises(dbleg.WrongDatabase):
        dbleg.check(other, leg, os.environ.get("GPUFLEET_TEST_DATABASE_URL") or URL)


def test_the_server_leg_fails_on_the_embedded_database() -> None:
    with pytest.raises(dbleg.WrongDatabase, match="ran on the embedded database"):
        dbleg.check("server", EMBEDDED, URL)
    with pytest.raises(dbleg.WrongDatabase, match=r"not 127\.0\.0\.1:5433"):
        dbleg.check("server", SERVER, "postgresql://postgres@127.0.0.1:5433/postgres")
    with pytest.raises(dbleg.WrongDatabase, match="no GPUFLEET_TEST_DATABASE_URL"):
        dbleg.check("server", SERVER, None)
    dbleg.check("server", SERVER, URL)


def test_the_embedded_leg_fails_on_a_server_or_an_inherited_url() -> None:
    with pytest.raises(dbleg.WrongDatabase, match="ran on a server"):
        dbleg.check("embedded", SERVER, None)
    with pytest.raises(dbleg.WrongDatabase, match="inherited"):
        dbleg.check("embedded", EMBEDDED, URL)
    with pytest.raises(dbleg.WrongDatabase, match="must be one of"):
        dbleg.check("another-server", EMBEDDED, None)
    dbleg.check("embedded", EMBEDDED, None)


def test_a_server_leg_without_its_url_fails_the_session(tmp_path: Path) -> None:
    """Broken on purpose: the server leg's URL lost, so the suite falls back to the embedded
    database. The session fixture must fail the tests, and the record must say what happened."""
    record = tmp_path / "leg.json"
    env = {k: v for k, v in os.environ.items() if k != "GPUFLEET_TEST_DATABASE_URL"}
    env |= {dbleg.EXPECT_ENV: "server", dbleg.RECORD_ENV: str(record)}
    test = "tests/test_db_leg.py::test_the_server_leg_fails_on_the_embedded_database"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert run.returncode != 0, run.stdout
    assert "ran on the embedded database" in run.stdout
    assert json.loads(record.read_text())["embedded"] is True


def test_ci_names_each_leg_and_unsets_an_inherited_url() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    embedded = re.search(r"^\(unset GPUFLEET_TEST_DATABASE_URL; run .* embedded\)", ci, re.M)
    assert embedded, "the embedded leg must unset an inherited GPUFLEET_TEST_DATABASE_URL"
    assert re.search(r'^GPUFLEET_TEST_DATABASE_URL="\$server_url" run .* server ', ci, re.M)
    assert f'{dbleg.EXPECT_ENV}="$expect" {dbleg.RECORD_ENV}="$record" bash -c "$TEST_COMMAND"' in ci
