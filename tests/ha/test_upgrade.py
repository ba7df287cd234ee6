"""An upgrade with a migration while replicas run: the old release keeps serving through `gpufleet db
upgrade` (run by the new release) without a failed request, then old and new replicas serve side by
side on the upgraded database, and an old replica restarted afterwards starts and is ready.

The new release is this package plus one more migration (it adds a table, a column and takes a
second): a copy of the package on PYTHONPATH, as an installed new version would be.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import gpufleet
from gpufleet.db import migrate
from tests.ha.harness import HaCluster, Replica, replica_env

pytestmark = pytest.mark.slow


@pytest.fixture
def replica_count() -> int:
    return 1  # the old release; the new one starts during the test


NEXT_MIGRATION = """
-- A release's expanding migration: new objects only, so the previous release keeps working on it.
select pg_sleep(1);
create table upgrade_probe (id uuid primary key default gen_random_uuid(), note text not null);
alter table jobs add column upgrade_note text;
"""


def new_release(tmp: Path) -> tuple[Path, str]:
    """A copy of the package with one more migration; (PYTHONPATH for it, the migration's name)."""
    root = tmp / "new-release"
    shutil.copytree(Path(gpufleet.__file__).parent, root / "gpufleet", ignore=shutil.ignore_patterns("__pycache__"))
    version = migrate.available()[-1].version + 1
    name = f"{version:04d}_upgrade_probe"
    (root / "gpufleet" / "db" / "migrations" / f"{name}.sql").write_text(NEXT_MIGRATION)
    return root, name


async def test_db_upgrade_while_the_old_release_serves(ha: HaCluster) -> None:
    old = ha.replicas[0]
    root, name = new_release(ha.tmp)
    env = {**replica_env(ha.pg, ha.db_name, ha.tmp, "new"), "PYTHONPATH": str(root)}
    failures: list[str] = []
    retried: list[str] = []
    served = 0
    upgrading = True

    async def call(c: httpx.AsyncClient, method: str, path: str, **kw: Any) -> None:
        """As a client should: a 503 is retried after its Retry-After (a POST with its key)."""
        nonlocal served
        for _ in range(5):
            r = await c.request(method, path, **kw)
            if r.status_code != 503:
                break
            assert int(r.headers["retry-after"]) >= 1 and r.headers["content-type"].startswith("application/problem")
            retried.append(f"{method} {path}: {r.json()['detail']}")
            await asyncio.sleep(0.2)
        served += 1
        if r.status_code >= 300:
            failures.append(f"{method} {path}: {r.status_code} {r.text[:200]}")

    async def serve_through_the_upgrade() -> None:
        async with httpx.AsyncClient(base_url=old.url, headers=ha.owner.headers, timeout=30) as c:
            while upgrading:
                key = {"Idempotency-Key": str(uuid.uuid4())}
                await asyncio.gather(
                    call(
                        c, "POST", "/v1/jobs", json={"name": "during", "gpu_count": 1, "command": ["true"]}, headers=key
                    ),
                    call(c, "GET", "/v1/jobs"),
                    call(c, "GET", "/readyz"),
                )
                await asyncio.sleep(0.05)

    load = asyncio.create_task(serve_through_the_upgrade())
    await asyncio.sleep(0.5)
    run_new = (
        f"import sys, gpufleet; assert gpufleet.__file__.startswith({str(root)!r}), gpufleet.__file__; "
        "from gpufleet.cli.main import main; sys.argv = ['gpufleet', 'db', 'upgrade', '--json']; main()"
    )
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        run_new,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await upgrade.communicate()
    await asyncio.sleep(0.5)
    upgrading = False
    await load
    assert upgrade.returncode == 0, err.decode()
    assert json.loads(out) == {"applied": [name]}, out.decode()
    assert not failures, failures[:5]  # no 500, nothing refused: at most a retried 503
    assert served > 30
    # A request whose prepared statement the migration changed (jobs gained a column) is a 503
    # once per replica's connection pool; asyncpg then drops its cache and the retry succeeds.
    assert len(retried) <= 6, retried

    # The new release beside the old ones: each sees the other's work; every replica is ready.
    new = Replica("new", env, ha.tmp / "new.log")
    new.start()
    ha.replicas.append(new)
    await new.ready()
    async with httpx.AsyncClient(headers=ha.owner.headers, timeout=30) as c:
        made = {}
        for replica in (old, new):
            r = await c.post(f"{replica.url}/v1/jobs", json={"name": replica.name, "gpu_count": 0, "command": ["true"]})
            assert r.status_code == 201, r.text
            made[replica.name] = r.json()["id"]
        for replica in (old, new):
            for job_id in made.values():
                assert (await c.get(f"{replica.url}/v1/jobs/{job_id}")).status_code == 200
        for replica in ha.replicas:
            assert (await c.get(f"{replica.url}/readyz")).status_code == 200
        # An old replica restarted now (it knows one migration less than the database has) starts.
        assert await old.stop() == 0
        old.start()
        await old.ready()
    async with ha.db.system_transaction() as conn:
        assert await conn.fetchval("select to_regclass('upgrade_probe') is not null")
        assert await conn.fetchval("select count(*) from schema_migrations where name = $1", name.split("_", 1)[1]) == 1
