"""Property-based fuzzing of the whole OpenAPI document against a real server: no 5xx, schema-conformant."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain import Role
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer


@pytest.fixture
async def fuzz_tenant(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, fuzz_tenant: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(
        pg_server.dsn(db_name),
        pg_server.dsn(db_name, user=RUNTIME_ROLE),
        settings={"rate_limit_key_per_minute": 0, "rate_limit_ip_per_minute": 0, "long_poll_max_s": 0.2},
    )
    server.start()
    yield server
    server.stop()


def test_api_fuzz(live: LiveServer, fuzz_tenant: Tenant) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, negative_data_rejection]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=live.url, headers=fuzz_tenant.headers)
            case.validate_response(response, checks=checks)

        exercise()
    assert calls >= 5 * len(operations)
