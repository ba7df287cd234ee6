"""An in-process API client on a fresh database, and tenants to call it with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gpufleet.api.app import create_app
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.db.setup import DatabaseHandle
from gpufleet.domain.tenancy import Organization, Role, User
from gpufleet.repo import orgs
from gpufleet.services.orgs import issue_key


@dataclass
class Tenant:
    org: Organization
    user: User
    key: str
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(db: Database, role: Role = Role.OWNER, org: Organization | None = None) -> Tenant:
    async with db.system_transaction() as conn:
        if org is None:
            org_id = uuid.uuid4()
            org = await orgs.create(conn, org_id=org_id, name=f"Org {org_id.hex[:6]}", slug=f"org-{org_id.hex[:10]}")
        user = await orgs.create_user(conn, email=f"{role.value}-{uuid.uuid4().hex[:8]}@example.com", name=role.value)
        await orgs.add_member(conn, org_id=org.id, user_id=user.id, role=role)
        key = await issue_key(conn, org_id=org.id, user_id=user.id, name="test", role=role)
    return Tenant(org, user, key.secret, role)


def build_app(db: Database, **settings: Any) -> FastAPI:
    return create_app(Settings(**settings), database=DatabaseHandle(db, None), bootstrap=False, background=False)


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def app(db: Database, app_settings: dict[str, Any]) -> AsyncIterator[FastAPI]:
    application = build_app(db, **app_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


TenantFactory = Callable[..., Any]


@pytest.fixture
def tenant(db: Database) -> TenantFactory:
    async def make(role: Role = Role.OWNER, org: Organization | None = None) -> Tenant:
        return await make_tenant(db, role, org)

    return make
