"""Fixtures of the several-replica scenarios: ``ha`` is three `gpufleet server` processes (``replica_count``)
on the test's database; each scenario ends with the ledger audit and the exactly-once check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import make_tenant
from tests.ha.harness import HaCluster, start_cluster
from tests.pg import PgServer


@pytest.fixture
def replica_count() -> int:
    """How many replicas ``ha`` starts; a module overrides it by defining its own fixture."""
    return 3


@pytest.fixture
async def ha(
    pg_server: PgServer, db_name: str, db: Database, tmp_path: Path, replica_count: int
) -> AsyncIterator[HaCluster]:
    owner = await make_tenant(db, Role.OWNER)
    cluster = await start_cluster(pg_server, db_name, db, owner, tmp_path, replicas=replica_count)
    try:
        yield cluster
    finally:
        await cluster.close()
