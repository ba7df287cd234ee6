"""`gpufleet prices`, `gpufleet usage` and `gpufleet budgets` against a real server: tables, CSV, --json,
the refusal of a hard budget as one line, and a job's cost in `jobs show`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpufleet.cli.common import console
from gpufleet.cli.demo import render
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.schemas.jobs import JobRead
from tests.api.conftest import Tenant, make_tenant
from tests.factories import create_host
from tests.liveserver import LiveServer
from tests.pg import PgServer
from tests.scheduling.helpers import scheduler
from tests.test_cli_jobs import Cli, _runner, _server


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = _server(pg_server, db_name)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return _runner(live.url, owner.key, tmp_path, monkeypatch)


async def test_prices_usage_csv_and_a_hard_budget(cli: Cli, owner: Tenant, db: Database) -> None:
    code, out, err = cli("prices", "set", "A100-80GB", "1.89")
    assert code == 0, err
    assert out.startswith("A100-80GB GPU-hour: 1.89 USD from ")
    assert cli("prices", "set", "--cpu", "0.04")[0] == 0
    code, _, err = cli("prices", "set", "A100-80GB")
    assert code == 2 and "MODEL PRICE" in err
    code, out, _ = cli("prices", "list", "--json")
    assert sorted((p["kind"], p["hourly_price"]) for p in json.loads(out)) == [("cpu", "0.0400"), ("gpu", "1.8900")]

    await create_host(db, owner.org.id, gpus_spec=(("A100-80GB", 81920),))
    code, out, err = cli("jobs", "submit", "--name", "t", "--gpu-fraction", "0.5", "--json", "--", "true")
    job = json.loads(out)["id"]
    assert (await scheduler(db).run_once()).placed == 1
    async with db.system_transaction() as conn:
        await conn.execute(
            "update allocations set created_at = now() - interval '2 hours' where job_id = $1", uuid.UUID(job)
        )
        await conn.execute("update gpu_prices set effective_from = now() - interval '1 day'")
    code, out, _ = cli("jobs", "show", job[:8])
    assert code == 0 and "1.89 so far" in out  # 0.5 x 2 h x 1.89
    shown = JobRead.model_validate_json(cli("jobs", "show", job, "--json")[1])
    with console.capture() as captured:
        console.print(render({shown.id: shown}, {}, {}))
    # the demo dashboard's cost column (4 decimals: the running job accrues ~0.0001 per 0.4 s meanwhile)
    assert "Cost" in captured.get() and "1.89" in captured.get()

    code, out, err = cli("usage", "--by", "model", "--since", "1d", "--csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["model", "name", "gpu_hours", "cost", "currency"]
    assert rows[1][0] == "A100-80GB" and rows[1][2].startswith("1.00") and rows[1][3:] == ["1.89", "USD"]
    code, out, _ = cli("usage", "--by", "user")
    assert owner.user.email in out and "$1.89" in out and "total" in out
    assert cli("usage", "--csv", "--json")[0] == 2

    # A 30-day period from yesterday: the hours backdated above are inside it at any time of the
    # month (a calendar month may have begun less than two hours ago).
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    code, out, err = cli("budgets", "set", "2", "--hard", "--period", "30d", "--start", yesterday)
    assert code == 0, err
    assert "$2.00 per 30-day period for the organization (hard); $1.89 spent this 30-day period" in out
    code, _, err = cli("jobs", "submit", "--name", "big", "--max-runtime", "1h", "--", "true")
    assert code == 1
    assert err.startswith(
        "error: 402 Budget Exceeded: budget: $1.89 of $2.00 spent this 30-day period; this job may cost $1.89"
    )
    code, out, _ = cli("budgets", "list", "--json")
    (b,) = json.loads(out)
    assert (b["spent"], b["remaining"], b["hard"]) == ("1.89", "0.11", True)
    code, out, _ = cli("budgets", "delete", b["id"][:8])
    assert code == 0 and out.startswith("deleted budget")


def test_a_custom_period_and_the_stop_policy_from_the_command_line(cli: Cli) -> None:
    code, out, err = cli(
        "budgets", "set", "300", "--period", "14d", "--start", "2026-01-05T00:00:00Z", "--hard", "--stop-running"
    )
    assert code == 0, err
    assert "$300.00 per 14-day period for the organization (hard, stops running work at 100 %)" in out
    code, out, _ = cli("budgets", "list", "--json")
    (b,) = json.loads(out)
    assert (b["period"], b["period_days"], b["starts_at"], b["stop_running"]) == (
        "custom",
        14,
        "2026-01-05T00:00:00Z",
        True,
    )
    # the window is the 14-day period now running, on the grid from the start
    start = datetime.fromisoformat(b["period_start"])
    assert (start - datetime(2026, 1, 5, tzinfo=UTC)).total_seconds() % (14 * 86400) == 0
    assert start <= datetime.now(UTC) < start + timedelta(days=14)
    assert cli("budgets", "set", "5", "--stop-running")[0] == 2  # needs --hard
    assert cli("budgets", "set", "5", "--start", "2026-01-05T00:00:00Z")[0] == 2  # a calendar month has no start
    assert cli("budgets", "set", "5", "--period", "2w")[0] == 2
