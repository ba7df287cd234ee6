"""First run: on an empty database, an admin user, a default organization and an owner API key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Organization, Role, TenantContext, User
from gpufleet.errors import NotFound
from gpufleet.repo import orgs
from gpufleet.services.join_tokens import create_join_token
from gpufleet.services.orgs import create_with_owner, issue_key


@dataclass(frozen=True, slots=True)
class FirstRun:
    user: User
    organization: Organization
    api_key: str  # shown once; never logged


async def first_run(db: Database, settings: Settings) -> FirstRun | None:
    """Create the first admin if there is no user at all; ``None`` when the database is not new.

    Several replicas starting on an empty database serialise on an advisory lock, so exactly
    one of them creates the admin.
    """
    async with db.system_transaction() as conn:
        await orgs.lock_bootstrap(conn)
        if await orgs.count_users(conn) > 0:
            return None
        user = await orgs.create_user(conn, email=settings.bootstrap_admin_email, name="Administrator")
        assert user is not None  # no user at all, under the bootstrap lock
        org_id = uuid.uuid4()
        org = await create_with_owner(
            conn,
            org_id=org_id,
            name="Default",
            slug="default",
            owner_id=user.id,
            actor="gpufleet",
            data={"name": "Default", "first_run": True},
        )
        key = await issue_key(conn, org_id=org_id, user_id=user.id, name="first-run owner key", role=Role.OWNER)
        return FirstRun(user, org, key.secret)


async def local_agent_token(db: Database) -> str:
    """A one-use join token for ``gpufleet up``'s own agent, in the default organization."""
    async with db.system_transaction() as conn:
        org = await orgs.default_org(conn)
    if org is None:
        raise NotFound("no organization to register the local agent in")
    issued = await create_join_token(
        db,
        TenantContext.system(org.id, "gpufleet"),
        name="gpufleet up: local agent",
        max_uses=1,
        expires_in=timedelta(hours=1),
    )
    return issued.secret
