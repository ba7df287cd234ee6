"""The one place actor strings are made: the formats stored in event rows and shown by the dashboard."""

from __future__ import annotations

from uuid import uuid4

import pytest

from gpufleet.domain.tenancy import Role, TenantContext, user_actor
from gpufleet.errors import Forbidden


def test_a_members_context_records_user_and_role() -> None:
    org, user = uuid4(), uuid4()
    ctx = TenantContext.of_user(org, user, Role.ADMIN)
    assert (ctx.org_id, ctx.user_id, ctx.actor, ctx.role) == (org, user, f"user:{user}", Role.ADMIN)
    assert user_actor(user) == ctx.actor  # the calls made before a context exists record the same


def test_the_system_and_a_host_have_no_user() -> None:
    org = uuid4()
    assert TenantContext.system(org) == TenantContext(org, None, None, None)
    assert TenantContext.system(org, "costs").actor == "costs"
    host = TenantContext.of_host(org, "gpu-7")
    assert (host.user_id, host.actor, host.role) == (None, "host:gpu-7", None)


def test_only_a_member_has_a_role_to_check() -> None:
    org, user = uuid4(), uuid4()
    assert TenantContext.of_user(org, user, Role.MEMBER).member() == (user, Role.MEMBER)
    with pytest.raises(Forbidden):
        TenantContext.system(org, "costs").member()
    with pytest.raises(Forbidden):
        TenantContext.of_user(org, user).member()  # no role given: not checked as a member
