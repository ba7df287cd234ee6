"""Every example of docs/sdk.md runs, as written, against a live server (found through the environment)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain import Role
from tests.api.conftest import Tenant, make_tenant
from tests.factories import create_host
from tests.liveserver import LiveServer
from tests.pg import PgServer

DOC = (Path(__file__).resolve().parent.parent / "docs" / "sdk.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, re.S)


@pytest.fixture
async def owner(db: Database) -> Tenant:
    tenant = await make_tenant(db, Role.OWNER)
    await create_host(db, tenant.org.id, gpus_spec=(("A100-80GB", 81920),))
    return tenant


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE))
    server.start()
    yield server
    server.stop()


def test_every_example_runs(live: LiveServer, owner: Tenant, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path))
    assert len(EXAMPLES) >= 7
    for i, code in enumerate(EXAMPLES):
        try:
            exec(compile(code, f"docs/sdk.md example {i + 1}", "exec"), {"__name__": "__main__"})  # noqa: S102
        except Exception as exc:
            raise AssertionError(f"docs/sdk.md example {i + 1} failed: {exc!r}\n{code}") from exc
