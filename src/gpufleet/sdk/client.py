"""The typed Python SDK's sync client (``AsyncClient`` in ``sdk/aio.py`` is its async twin); docs/sdk.md.

from gpufleet.sdk import Client
with Client() as gf:  # GPUFLEET_URL / GPUFLEET_API_KEY, else the CLI's config file
    print(gf.me().user.email)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from gpufleet.domain.tenancy import Role
from gpufleet.schemas.events import FeedPage
from gpufleet.schemas.resolve import ResolveRead
from gpufleet.schemas.tenancy import (
    ApiKeyCreated,
    ApiKeyRead,
    InviteAccepted,
    InviteCreated,
    InviteRead,
    MemberRead,
    MembershipRead,
    MeRead,
    OrganizationCreated,
    OrganizationRead,
)
from gpufleet.sdk.base import LONG_POLL_MARGIN_S, ApiError, BaseClient, present
from gpufleet.sdk.costs import CostsMixin
from gpufleet.sdk.hosts import HostsMixin
from gpufleet.sdk.jobs import JobsMixin
from gpufleet.sdk.models import ModelsMixin
from gpufleet.sdk.predictions import PredictionsMixin
from gpufleet.sdk.webhooks import WebhooksMixin

__all__ = ["ApiError", "Client"]


def api_key_body(name: str, role: Role | None, expires_at: datetime | None = None) -> dict[str, Any]:
    """Without ``role`` the key gets the caller's; without ``expires_at`` it does not expire."""
    body: dict[str, Any] = {"name": name}
    if role is not None:
        body["role"] = role.value
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return body


class Client(JobsMixin, HostsMixin, CostsMixin, WebhooksMixin, ModelsMixin, PredictionsMixin, BaseClient):
    # -- health ---------------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/readyz")
        return result

    def resolve(self, kind: str, prefix: str) -> ResolveRead:
        """The ids of ``kind`` (job, host, gpu, key, join_token, invite, quota) starting with ``prefix``."""
        return self._one(ResolveRead, "GET", "/v1/resolve", params={"kind": kind, "prefix": prefix})

    # -- users and organizations ----------------------------------------------------------

    def events(
        self, *, after_seq: int = 0, wait_s: float = 0.0, entity_type: str | None = None, limit: int = 200
    ) -> FeedPage:
        """The organization's change feed after ``after_seq`` (-1: from now), long-polled up to ``wait_s``."""
        params = {"after_seq": after_seq, "wait_s": wait_s, "entity_type": entity_type, "limit": limit}
        return self._one(FeedPage, "GET", "/v1/events", params=params, timeout=wait_s + LONG_POLL_MARGIN_S)

    def me(self) -> MeRead:
        return self._one(MeRead, "GET", "/v1/me")

    def list_organizations(self) -> list[MembershipRead]:
        return TypeAdapter(list[MembershipRead]).validate_python(self.request("GET", "/v1/organizations"))

    def create_organization(self, name: str, slug: str | None = None) -> OrganizationCreated:
        return self._one(OrganizationCreated, "POST", "/v1/organizations", json={"name": name, "slug": slug})

    def get_organization(self, org_id: UUID) -> OrganizationRead:
        return self._one(OrganizationRead, "GET", f"/v1/organizations/{org_id}")

    def update_organization(
        self, org_id: UUID, *, name: str | None = None, settings: dict[str, Any] | None = None
    ) -> OrganizationRead:
        body = present({"name": name, "settings": settings})
        return self._one(OrganizationRead, "PATCH", f"/v1/organizations/{org_id}", json=body)

    def delete_organization(self, org_id: UUID) -> None:
        self.request("DELETE", f"/v1/organizations/{org_id}")

    # -- members --------------------------------------------------------------------------

    def list_members(self) -> list[MemberRead]:
        return list(self._all(MemberRead, "/v1/members"))

    def set_member_role(self, user_id: UUID, role: Role) -> MemberRead:
        return self._one(MemberRead, "PATCH", f"/v1/members/{user_id}", json={"role": role.value})

    def remove_member(self, user_id: UUID) -> None:
        self.request("DELETE", f"/v1/members/{user_id}")

    # -- invites --------------------------------------------------------------------------

    def create_invite(self, email: str, role: Role = Role.MEMBER, expires_in_days: int = 7) -> InviteCreated:
        body = {"email": email, "role": role.value, "expires_in_days": expires_in_days}
        return self._one(InviteCreated, "POST", "/v1/invites", json=body)

    def list_invites(self) -> list[InviteRead]:
        return list(self._all(InviteRead, "/v1/invites"))

    def revoke_invite(self, invite_id: UUID) -> InviteRead:
        return self._one(InviteRead, "DELETE", f"/v1/invites/{invite_id}")

    def accept_invite(self, token: str, name: str = "") -> InviteAccepted:
        return self._one(InviteAccepted, "POST", "/v1/invites/accept", json={"token": token, "name": name})

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(self, name: str, role: Role | None = None, expires_at: datetime | None = None) -> ApiKeyCreated:
        return self._one(ApiKeyCreated, "POST", "/v1/api-keys", json=api_key_body(name, role, expires_at))

    def list_api_keys(self) -> list[ApiKeyRead]:
        return list(self._all(ApiKeyRead, "/v1/api-keys"))

    def revoke_api_key(self, key_id: UUID) -> ApiKeyRead:
        return self._one(ApiKeyRead, "DELETE", f"/v1/api-keys/{key_id}")
