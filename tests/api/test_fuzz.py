"""Property-based fuzzing of the whole OpenAPI document against a real server: no 5xx, schema-conformant.

Every operation gets the credential it takes (an API key, a join token for registration, a host
credential for the other agent routes), so the fuzzing reaches past authentication everywhere;
a stateful run then chains operations through the links schemathesis infers (create, then read,
update and delete what was created).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import facts, gpus
from tests.api.conftest import Tenant, make_tenant
from tests.liveserver import LiveServer
from tests.pg import PgServer

# A failure is reported as generated: shrinking a request through a live server takes minutes.
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]


@pytest.fixture
async def fuzz_tenant(db: Database) -> Tenant:
    return await make_tenant(db, Role.OWNER)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, fuzz_tenant: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(
        pg_server.dsn(db_name),
        pg_server.dsn(db_name, user=RUNTIME_ROLE),
        settings={
            "rate_limit_key_per_minute": 0,
            "rate_limit_ip_per_minute": 0,
            "long_poll_max_s": 0.2,
            "assignment_poll_max_s": 0.2,
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def credentials(live: LiveServer, fuzz_tenant: Tenant) -> Callable[[str], dict[str, str]]:
    """The headers each path takes."""
    token = httpx.post(f"{live.url}/v1/join-tokens", json={}, headers=fuzz_tenant.headers).json()["token"]
    body = {"name": "fuzz-host", "facts": facts("fuzz-host"), "gpus": gpus("fuzz-host", 2)}
    reply = httpx.post(f"{live.url}/v1/agent/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 201, reply.text
    host = {"Authorization": f"Bearer {reply.json()['credential']}"}
    join = {"Authorization": f"Bearer {token}"}

    def for_path(path: str) -> dict[str, str]:
        if path == "/v1/agent/register":
            return join
        if path.startswith("/v1/agent/"):
            return host
        return fuzz_tenant.headers

    return for_path


def test_api_fuzz(live: LiveServer, credentials: Callable[[str], dict[str, str]]) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, negative_data_rejection]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 50
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None, phases=NO_SHRINK
        )
        def exercise(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=live.url, headers=credentials(case.operation.path))
            case.validate_response(response, checks=checks)

        exercise()
    assert calls >= 5 * len(operations)


def test_api_fuzz_stateful(live: LiveServer, credentials: Callable[[str], dict[str, str]]) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    base = schema.as_state_machine()
    transitions: list[int] = []
    # A scenario may revoke the key it found (list keys, then revoke one): each gets a key of its own.
    keys = [
        httpx.post(f"{live.url}/v1/api-keys", json={"name": f"fuzz-{i}"}, headers=credentials("/v1/api-keys")).json()[
            "secret"
        ]
        for i in range(40)
    ]

    class Fleet(base):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            self.key = keys.pop() if keys else None

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            headers = credentials(case.operation.path)
            if self.key is not None and not case.operation.path.startswith("/v1/agent/"):
                headers = {"Authorization": f"Bearer {self.key}"}
            return {"base_url": live.url, "headers": headers}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            transitions.append(response.status_code)

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    Fleet.run(
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=NO_SHRINK,
        )
    )
    assert len(transitions) >= 25
    assert all(code < 500 for code in transitions)
    assert any(200 <= code < 300 for code in transitions)
