"""/v1/invites and /v1/api-keys."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request

from gpufleet.api.deps import (
    DB,
    DEFAULT_LIMIT,
    NOT_FOUND,
    Cursor,
    Limit,
    MaybeCaller,
    Tenant,
    forget_credentials,
    requires,
)
from gpufleet.pagination import decode_cursor
from gpufleet.schemas.common import Page, vars_of
from gpufleet.schemas.tenancy import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    InviteAccept,
    InviteAccepted,
    InviteCreate,
    InviteCreated,
    InviteRead,
    OrganizationRead,
    UserRead,
)
from gpufleet.services import access

router = APIRouter(prefix="/v1")


@router.post("/invites", status_code=201, tags=["invites"], **requires("invites.create"))
async def create_invite(body: InviteCreate, ctx: Tenant, db: DB) -> InviteCreated:
    invite, token = await access.create_invite(
        db, ctx, email=body.email, role=body.role, expires_in_days=body.expires_in_days
    )
    return InviteCreated.model_validate({**vars_of(invite), "token": token})


@router.get("/invites", tags=["invites"], **requires("invites.list"))
async def list_invites(ctx: Tenant, db: DB, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[InviteRead]:
    rows = await access.list_invites(db, ctx, limit=limit, after=decode_cursor(cursor))
    return Page[InviteRead].of(rows, limit, InviteRead.model_validate)


@router.get("/invites/{invite_id}", tags=["invites"], **requires("invites.read", NOT_FOUND))
async def get_invite(invite_id: UUID, ctx: Tenant, db: DB) -> InviteRead:
    return InviteRead.model_validate(await access.get_invite(db, ctx, invite_id))


@router.delete("/invites/{invite_id}", tags=["invites"], **requires("invites.revoke", NOT_FOUND))
async def revoke_invite(invite_id: UUID, ctx: Tenant, db: DB) -> InviteRead:
    return InviteRead.model_validate(await access.revoke_invite(db, ctx, invite_id))


@router.post(
    "/invites/accept",
    status_code=201,
    tags=["invites"],
    responses={
        401: {
            "description": "unknown, used, revoked or expired token; an invalid credential; or the invited "
            "email has an account and the request is not signed in as it"
        },
        403: {"description": "signed in as an account the invite is not addressed to"},
    },
)
async def accept_invite(body: InviteAccept, db: DB, caller: MaybeCaller) -> InviteAccepted:
    """Accept an invitation by its token; returns a first API key, once.

    For an email with no account yet the token is enough: the account is created. For an email
    that already has an account, the request must be signed in as that account
    (``Authorization: Bearer`` its API key of any organization, or its Supabase token);
    otherwise nothing is created and the answer says so."""
    org, user, role, key = await access.accept_invite(db, token=body.token, name=body.name, caller=caller)
    return InviteAccepted(
        organization=OrganizationRead.model_validate(org),
        user=UserRead.model_validate(user),
        role=role,
        api_key=ApiKeyCreated.of(key.key, key.secret),
    )


@router.post("/api-keys", status_code=201, tags=["api-keys"], **requires("api_keys.create"))
async def create_api_key(body: ApiKeyCreate, ctx: Tenant, db: DB) -> ApiKeyCreated:
    key = await access.create_key(db, ctx, name=body.name, role=body.role, expires_at=body.expires_at)
    return ApiKeyCreated.of(key.key, key.secret)


@router.get("/api-keys", tags=["api-keys"], **requires("api_keys.list"))
async def list_api_keys(ctx: Tenant, db: DB, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[ApiKeyRead]:
    rows = await access.list_keys(db, ctx, limit=limit, after=decode_cursor(cursor))
    return Page[ApiKeyRead].of(rows, limit, ApiKeyRead.model_validate)


@router.get("/api-keys/{key_id}", tags=["api-keys"], **requires("api_keys.read", NOT_FOUND))
async def get_api_key(key_id: UUID, ctx: Tenant, db: DB) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await access.get_key(db, ctx, key_id))


@router.delete("/api-keys/{key_id}", tags=["api-keys"], **requires("api_keys.revoke", NOT_FOUND))
async def revoke_api_key(key_id: UUID, ctx: Tenant, db: DB, request: Request) -> ApiKeyRead:
    revoked = await access.revoke_key(db, ctx, key_id)
    forget_credentials(request)
    return ApiKeyRead.model_validate(revoked)
