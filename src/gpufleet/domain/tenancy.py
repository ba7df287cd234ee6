"""Organisations, users, memberships and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from gpufleet.errors import Forbidden


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who a tenant-scoped use case acts for: the organization, the user (None for the system or
    a host), the actor its events record, and the caller's role where a rule depends on it.

    Built once: for a request in ``api/deps.tenant`` from the authenticated principal, for the
    server's own work with ``system``, for a host with ``of_host`` (agent services take its
    ``HostIdentity``, whose ``actor`` is ``host_actor``). Every actor string is made
    here, nowhere else.
    """

    org_id: UUID
    user_id: UUID | None = None
    actor: str | None = None  # None: the system, shown as such ("user:<id>", "host:<name>", "costs", ...)
    role: Role | None = None  # the caller's effective role; None for the system and hosts

    @classmethod
    def of_user(cls, org_id: UUID, user_id: UUID, role: Role | None = None) -> TenantContext:
        return cls(org_id, user_id, user_actor(user_id), role)

    @classmethod
    def system(cls, org_id: UUID, actor: str | None = None) -> TenantContext:
        """The server acting on its own (``actor`` names the part of it, e.g. "costs")."""
        return cls(org_id, None, actor)

    @classmethod
    def of_host(cls, org_id: UUID, name: str) -> TenantContext:
        return cls(org_id, None, host_actor(name))

    def member(self) -> tuple[UUID, Role]:
        """(user, role) of the member acting, for rules about the caller as a member (which roles
        it may grant, whose API keys it sees); the system and hosts are no member."""
        if self.user_id is None or self.role is None:
            raise Forbidden("only a member of the organization can do this")
        return self.user_id, self.role


def user_actor(user_id: UUID) -> str:
    """The actor of what a user did ("user:<id>"): every event a user causes records it so, also
    from the calls made before a context exists (creating an organization, accepting an invite)."""
    return f"user:{user_id}"


def host_actor(name: str) -> str:
    """The actor of what a host's agent did ("host:<name>"), for the agent-facing services that
    act as an authenticated ``HostIdentity`` rather than a ``TenantContext``."""
    return f"host:{name}"


@dataclass(frozen=True, slots=True)
class Organization:
    id: UUID
    name: str
    slug: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    name: str
    external_id: str | None
    is_active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Membership:
    organization_id: UUID
    user_id: UUID
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never its secret (shown once, at creation), only its prefix."""

    id: UUID
    organization_id: UUID
    user_id: UUID
    name: str
    prefix: str
    role: Role
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
