"""Users, organizations, members, invites and API keys on the wire."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, Field, field_validator

from gpufleet.domain.tenancy import ApiKey, Role
from gpufleet.schemas.common import JsonObject, RequestModel, ResponseModel, Timestamp, vars_of

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^[^@\s]+@localhost$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _email(value: str) -> str:
    if len(value) > 320 or not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value.lower()


Email = Annotated[str, AfterValidator(_email)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class UserRead(ResponseModel):
    id: UUID
    email: str
    name: str


class MembershipRead(ResponseModel):
    organization_id: UUID
    organization_name: str
    organization_slug: str
    role: Role


class MeRead(ResponseModel):
    user: UserRead
    memberships: list[MembershipRead]
    organization_id: UUID | None = Field(description="The organization this credential acts in, if any.")
    role: Role = Field(description="The effective role of this credential in that organization.")
    credential: str = Field(description="api_key or jwt")


class OrganizationCreate(RequestModel):
    name: Name
    slug: str | None = Field(default=None, description="URL-safe unique name; derived from `name` when omitted.")

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        if v is not None and not _SLUG.match(v):
            raise ValueError("lowercase letters, digits and '-', at most 63, starting with a letter or digit")
        return v


class OrganizationUpdate(RequestModel):
    name: Name | None = None
    settings: JsonObject | None = Field(default=None, description="Replaces the settings object.")


class OrganizationRead(ResponseModel):
    id: UUID
    name: str
    slug: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class OrganizationCreated(ResponseModel):
    organization: OrganizationRead
    api_key: ApiKeyCreated | None = Field(
        default=None, description="An owner key for the new organization, shown once (API-key callers only)."
    )


class MemberRead(ResponseModel):
    user_id: UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class MemberUpdate(RequestModel):
    role: Role


class InviteCreate(RequestModel):
    email: Email
    role: Role = Role.MEMBER
    expires_in_days: int = Field(default=7, ge=1, le=90)


class InviteRead(ResponseModel):
    id: UUID
    email: str
    role: Role
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class InviteCreated(InviteRead):
    token: str = Field(description="Shown once: give it to the invitee, who accepts with it.")


class InviteAccept(RequestModel):
    token: str = Field(min_length=10, max_length=200)
    name: str = Field(default="", max_length=200)


class InviteAccepted(ResponseModel):
    organization: OrganizationRead
    user: UserRead
    role: Role
    api_key: ApiKeyCreated


class ApiKeyCreate(RequestModel):
    name: Name
    role: Role | None = Field(default=None, description="At most the creator's role; defaults to it.")
    expires_at: Timestamp | None = Field(default=None, description="Timezone-aware; must be in the future.")


class ApiKeyRead(ResponseModel):
    id: UUID
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    secret: str = Field(description="Shown once; store it now. Only its SHA-256 is kept.")

    @classmethod
    def of(cls, key: ApiKey, secret: str) -> ApiKeyCreated:
        """A new API key with its secret, the one answer that shows the secret."""
        return cls.model_validate({**vars_of(key), "secret": secret})


OrganizationCreated.model_rebuild()
InviteAccepted.model_rebuild()
