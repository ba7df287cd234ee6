"""Invites and API keys: secrets shown once, stored hashed, scoped to one organization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import ApiKey, Organization, Role, TenantContext, User, user_actor
from gpufleet.errors import Conflict, Forbidden, NotFound, Unauthorized
from gpufleet.repo import api_keys, events, members, orgs
from gpufleet.services.auth import Principal, secret_hash
from gpufleet.services.lookup import found
from gpufleet.services.orgs import CreatedKey, check_future, check_new_role, issue_key


async def create_invite(
    db: Database, ctx: TenantContext, *, email: str, role: Role, expires_in_days: int
) -> tuple[members.Invite, str]:
    me, _ = ctx.member()
    org_id = ctx.org_id
    check_new_role(ctx, role)
    issued = security.issue(security.INVITE_TOKEN)
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        if await members.has_email(conn, org_id=org_id, email=email):
            raise Conflict(f"{email} is already a member")
        invite = await members.create_invite(
            conn,
            org_id=org_id,
            email=email,
            role=role,
            token_hash=issued.hash,
            invited_by=me,
            expires_at=datetime.now(UTC) + timedelta(days=expires_in_days),
        )
        await events.record(conn, ctx, "invite", invite.id, "invite.created", {"email": email, "role": role.value})
        return invite, issued.secret


async def list_invites(
    db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[members.Invite]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await members.invites_page(conn, org_id=org_id, limit=limit, after=after)


async def get_invite(db: Database, ctx: TenantContext, invite_id: UUID) -> members.Invite:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        invite = found(await members.get_invite(conn, org_id=org_id, invite_id=invite_id), f"invite {invite_id}")
    return invite


async def revoke_invite(db: Database, ctx: TenantContext, invite_id: UUID) -> members.Invite:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        invite = await members.revoke_invite(conn, org_id=org_id, invite_id=invite_id)
        if invite is None:
            if await members.get_invite(conn, org_id=org_id, invite_id=invite_id) is not None:
                raise Conflict("this invite was already accepted")
            raise NotFound(f"invite {invite_id} not found")
        await events.record(conn, ctx, "invite", invite_id, "invite.revoked")
        return invite


async def accept_invite(
    db: Database, *, token: str, name: str, caller: Principal | None = None
) -> tuple[Organization, User, Role, CreatedKey]:
    """Accept by token: the membership, the user if new, and a first API key, in one transaction.

    The token alone speaks only for an email that has no account yet (the account is created;
    a caller's own credential plays no part). An invite addressed to an existing account is
    accepted only by a request authenticated as that account (``caller``: its API key, of any
    organization, or its Supabase token); otherwise nothing is created, so whoever holds the
    token (the inviting admin included) never gets a credential of someone else's account.
    """
    token_hash = secret_hash(token, security.INVITE_TOKEN, "malformed invite token")
    async with db.system_transaction() as conn:
        claimed = await members.claim_invite(conn, token_hash=token_hash)
        if claimed is None:
            raise Unauthorized("unknown invite token")
        invite, usable = claimed
        if not usable:
            raise Unauthorized("this invite was already used, revoked, or has expired")
        user = await orgs.user_by_email(conn, email=invite.email)
        if user is not None and caller is None:
            raise Unauthorized(
                "an account with this email already exists: accept the invite signed in as that account "
                "(Authorization: Bearer <its API key or Supabase token>). Nothing was changed"
            )
        if user is not None and caller is not None and user.id != caller.user_id:
            raise Forbidden(
                "this invite is addressed to another account: accept it signed in as the invited account. "
                "Nothing was changed"
            )
        if user is None:
            user = await orgs.create_user(conn, email=invite.email, name=name)
            if user is None:
                raise Conflict(
                    f"an account for {invite.email} was created at this same moment: accept the invite again, "
                    "signed in as that account. Nothing was changed"
                )
        if await members.get(conn, org_id=invite.organization_id, user_id=user.id) is not None:
            raise Conflict(f"{invite.email} is already a member of this organization")
        await orgs.add_member(conn, org_id=invite.organization_id, user_id=user.id, role=invite.role)
        await members.mark_invite_accepted(conn, invite_id=invite.id, user_id=user.id)
        await events.append(
            conn,
            invite.organization_id,
            "member",
            user.id,
            "member.joined",
            {"invite_id": str(invite.id), "role": invite.role.value},
            actor=user_actor(user.id),
        )
        key = await issue_key(conn, org_id=invite.organization_id, user_id=user.id, name="first key", role=invite.role)
        org = await orgs.get(conn, org_id=invite.organization_id)
        assert org is not None
        return org, user, invite.role, key


async def create_key(
    db: Database, ctx: TenantContext, *, name: str, role: Role | None, expires_at: datetime | None
) -> CreatedKey:
    me, my_role = ctx.member()
    org_id = ctx.org_id
    wanted = role or my_role
    check_new_role(ctx, wanted)
    check_future(expires_at, "expires_at")
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await issue_key(conn, org_id=org_id, user_id=me, name=name, role=wanted, expires_at=expires_at)


async def list_keys(
    db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[ApiKey]:
    me, my_role = ctx.member()
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        keys = await api_keys.page(conn, org_id=org_id, limit=limit, after=after)
    # Members see their own keys; admins and owners see everyone's.
    return keys if my_role.at_least(Role.ADMIN) else [k for k in keys if k.user_id == me]


async def get_key(db: Database, ctx: TenantContext, key_id: UUID) -> ApiKey:
    me, my_role = ctx.member()
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        key = await api_keys.get(conn, org_id=org_id, key_id=key_id)
    if key is None or (key.user_id != me and not my_role.at_least(Role.ADMIN)):
        raise NotFound(f"API key {key_id} not found")
    return key


async def revoke_key(db: Database, ctx: TenantContext, key_id: UUID) -> ApiKey:
    me, my_role = ctx.member()
    key = await get_key(db, ctx, key_id)
    if key.user_id != me and not my_role.at_least(key.role):
        raise Forbidden(f"a {my_role} cannot revoke a {key.role} key")
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        revoked = await api_keys.revoke(conn, org_id=org_id, key_id=key_id)
        assert revoked is not None
        await events.record(conn, ctx, "api_key", key_id, "api_key.revoked")
        return revoked
