"""/v1/me, /v1/organizations, /v1/members."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response

from gpufleet.api.deps import (
    DB,
    DEFAULT_LIMIT,
    NOT_FOUND,
    Caller,
    Cursor,
    Limit,
    Tenant,
    forget_credentials,
    requires,
)
from gpufleet.pagination import decode_cursor
from gpufleet.schemas.common import Page
from gpufleet.schemas.tenancy import (
    ApiKeyCreated,
    MemberRead,
    MembershipRead,
    MemberUpdate,
    MeRead,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationRead,
    OrganizationUpdate,
    UserRead,
)
from gpufleet.services import orgs

router = APIRouter(prefix="/v1")


@router.get("/me", tags=["users"], **requires("me.read"))
async def get_me(p: Caller, db: DB) -> MeRead:
    me = await orgs.me(db, p)
    return MeRead(
        user=UserRead.model_validate(me.user),
        memberships=[MembershipRead.model_validate(m) for m in me.memberships],
        organization_id=p.org_id,
        role=p.role,
        credential=p.credential,
    )


@router.get("/organizations", tags=["organizations"], **requires("orgs.list"))
async def list_organizations(p: Caller, db: DB) -> list[MembershipRead]:
    me = await orgs.me(db, p)
    return [MembershipRead.model_validate(m) for m in me.memberships]


@router.post("/organizations", status_code=201, tags=["organizations"], **requires("orgs.create"))
async def create_organization(body: OrganizationCreate, p: Caller, db: DB) -> OrganizationCreated:
    org, key = await orgs.create(db, p, name=body.name, slug=body.slug, with_key=p.credential == "api_key")
    return OrganizationCreated(
        organization=OrganizationRead.model_validate(org),
        api_key=ApiKeyCreated.of(key.key, key.secret) if key else None,
    )


@router.get("/organizations/{org_id}", tags=["organizations"], **requires("orgs.read", NOT_FOUND))
async def get_organization(org_id: UUID, ctx: Tenant, db: DB) -> OrganizationRead:
    return OrganizationRead.model_validate(await orgs.get(db, ctx, org_id))


@router.patch("/organizations/{org_id}", tags=["organizations"], **requires("orgs.update", NOT_FOUND))
async def update_organization(org_id: UUID, body: OrganizationUpdate, ctx: Tenant, db: DB) -> OrganizationRead:
    return OrganizationRead.model_validate(await orgs.update(db, ctx, org_id, name=body.name, settings=body.settings))


@router.delete(
    "/organizations/{org_id}",
    status_code=204,
    tags=["organizations"],
    **requires("orgs.delete", {**NOT_FOUND, 409: {"description": "still has hosts or running jobs"}}),
)
async def delete_organization(org_id: UUID, ctx: Tenant, db: DB, request: Request) -> Response:
    await orgs.delete(db, ctx, org_id)
    forget_credentials(request)
    return Response(status_code=204)


@router.get("/members", tags=["members"], **requires("members.list"))
async def list_members(ctx: Tenant, db: DB, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[MemberRead]:
    rows = await orgs.list_members(db, ctx, limit=limit, after=decode_cursor(cursor))
    return Page[MemberRead].of(rows, limit, MemberRead.model_validate, key=lambda m: (m.created_at, m.user_id))


@router.patch("/members/{user_id}", tags=["members"], **requires("members.update", NOT_FOUND))
async def update_member(user_id: UUID, body: MemberUpdate, ctx: Tenant, db: DB, request: Request) -> MemberRead:
    updated = await orgs.set_role(db, ctx, user_id, body.role)
    forget_credentials(request)
    return MemberRead.model_validate(updated)


@router.delete(
    "/members/{user_id}",
    status_code=204,
    tags=["members"],
    **requires("members.remove", {**NOT_FOUND, 409: {"description": "the last owner"}}),
)
async def remove_member(user_id: UUID, ctx: Tenant, db: DB, request: Request) -> Response:
    await orgs.remove_member(db, ctx, user_id)
    forget_credentials(request)
    return Response(status_code=204)
