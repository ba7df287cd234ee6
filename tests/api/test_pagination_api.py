"""Every list reads `limit` and `cursor` the same way: 422 naming the parameter, never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from gpufleet.domain.tenancy import Role
from gpufleet.pagination import encode_cursor
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem

LISTS = [
    "/v1/jobs",
    f"/v1/jobs/{uuid.uuid4()}/events",
    "/v1/hosts",
    "/v1/gpus",
    "/v1/join-tokens",
    "/v1/members",
    "/v1/invites",
    "/v1/api-keys",
    "/v1/webhooks",
    f"/v1/webhooks/{uuid.uuid4()}/deliveries",
    "/v1/models",
    "/v1/models/someone/something/versions",
    "/v1/deployments",
    "/v1/predictions",
    "/v1/files",
]


@pytest.mark.parametrize("path", LISTS)
async def test_each_list_refuses_bad_limits_and_cursors(
    client: httpx.AsyncClient, tenant: TenantFactory, path: str
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    for limit in (0, 201):
        assert_problem(await client.get(path, params={"limit": limit}, headers=t.headers), 422, "limit")
    for cursor in ("garbage", "x" * 201, encode_cursor(("host-a", "b", 3))):
        assert_problem(await client.get(path, params={"cursor": cursor}, headers=t.headers), 422, "cursor")
    # A cursor of another list's shape is refused too, never read as something else.
    other = encode_cursor((7,)) if "/events" not in path else encode_cursor((datetime.now(UTC), uuid.uuid4()))
    assert_problem(await client.get(path, params={"cursor": other}, headers=t.headers), 422, "cursor")
