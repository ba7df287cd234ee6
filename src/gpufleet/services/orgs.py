"""Organizations and their members: create, read, update, delete; roles; the last-owner rule."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import ApiKey, Organization, Role, TenantContext, User, user_actor
from gpufleet.errors import Conflict, Forbidden, InvalidInput, NotFound
from gpufleet.repo import api_keys, events, members, orgs
from gpufleet.services.auth import Principal
from gpufleet.services.lookup import found


@dataclass(frozen=True, slots=True)
class Me:
    user: User
    memberships: list[members.MembershipOf]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50] or "org"
    return slug if slug[0].isalnum() else f"o{slug}"


def _same_org(ctx: TenantContext, org_id: UUID) -> UUID:
    # Another organization's object is answered like a missing one.
    if ctx.org_id != org_id:
        raise NotFound(f"organization {org_id} not found")
    return org_id


async def me(db: Database, p: Principal) -> Me:
    async with db.system_transaction() as conn:
        user = found(await orgs.get_user(conn, user_id=p.user_id), "user")
        return Me(user, await members.memberships_of(conn, user_id=p.user_id))


async def issue_key(
    conn: Any, *, org_id: UUID, user_id: UUID, name: str, role: Role, expires_at: datetime | None = None
) -> CreatedKey:
    issued = security.issue(security.API_KEY)
    key = await api_keys.create(
        conn,
        org_id=org_id,
        user_id=user_id,
        name=name,
        prefix=issued.display_prefix,
        key_hash=issued.hash,
        role=role,
        expires_at=expires_at,
    )
    await events.append(
        conn,
        org_id,
        "api_key",
        key.id,
        "api_key.created",
        {"name": name, "role": role.value},
        actor=user_actor(user_id),
    )
    return CreatedKey(key, issued.secret)


async def create_with_owner(
    conn: Any, *, org_id: UUID, name: str, slug: str, owner_id: UUID, actor: str, data: dict[str, Any]
) -> Organization:
    """A new organization with its first owner, and its ``organization.created`` event (``data``)."""
    org = await orgs.create(conn, org_id=org_id, name=name, slug=slug)
    await orgs.add_member(conn, org_id=org_id, user_id=owner_id, role=Role.OWNER)
    await events.append(conn, org_id, "organization", org_id, "organization.created", data, actor=actor)
    return org


async def create(
    db: Database, p: Principal, *, name: str, slug: str | None, with_key: bool
) -> tuple[Organization, CreatedKey | None]:
    org_id = uuid.uuid4()
    wanted = slug or _slugify(name)
    async with db.system_transaction() as conn:
        if slug is None and await orgs.slug_taken(conn, slug=wanted):
            wanted = f"{wanted[:50]}-{org_id.hex[:6]}"
    try:
        async with db.transaction(org_id, user_id=p.user_id) as conn:
            org = await create_with_owner(
                conn,
                org_id=org_id,
                name=name,
                slug=wanted,
                owner_id=p.user_id,
                actor=user_actor(p.user_id),
                data={"name": name, "slug": wanted},
            )
            key = None
            if with_key:
                key = await issue_key(conn, org_id=org_id, user_id=p.user_id, name=f"{wanted} owner", role=Role.OWNER)
            return org, key
    except asyncpg.UniqueViolationError as exc:
        # Slugs are unique across tenants: say neither whose it is nor that another organization exists.
        raise Conflict("slug not available; choose another", field="slug") from exc


async def get(db: Database, ctx: TenantContext, org_id: UUID) -> Organization:
    async with db.transaction(_same_org(ctx, org_id), user_id=ctx.user_id) as conn:
        org = found(await orgs.get(conn, org_id=org_id), f"organization {org_id}")
    return org


async def update(
    db: Database, ctx: TenantContext, org_id: UUID, *, name: str | None, settings: dict[str, Any] | None
) -> Organization:
    async with db.transaction(_same_org(ctx, org_id), user_id=ctx.user_id) as conn:
        org = found(await orgs.update(conn, org_id=org_id, name=name, settings=settings), f"organization {org_id}")
        await events.record(
            conn,
            ctx,
            "organization",
            org_id,
            "organization.updated",
            {"name": name, "settings_changed": settings is not None},
        )
        return org


async def delete(db: Database, ctx: TenantContext, org_id: UUID) -> None:
    async with db.transaction(_same_org(ctx, org_id), user_id=ctx.user_id) as conn:
        hosts, active = await orgs.blockers(conn, org_id=org_id)
        if hosts or active:
            raise Conflict(
                f"organization still has {hosts} host(s) and {active} allocated or running job(s); "
                "remove its hosts and cancel its jobs first"
            )
        if not await orgs.delete(conn, org_id=org_id):
            raise NotFound(f"organization {org_id} not found")


async def list_members(
    db: Database, ctx: TenantContext, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[members.Member]:
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await members.page(conn, org_id=org_id, limit=limit, after=after)


async def _owners_and_member(conn: Any, org_id: UUID, user_id: UUID) -> tuple[list[UUID], members.Member]:
    """The organization's owners and its member ``user_id`` (locked for the change); NotFound if none."""
    owners = await members.owners(conn, org_id=org_id)
    target = found(await members.get(conn, org_id=org_id, user_id=user_id, for_update=True), f"member {user_id}")
    return owners, target


async def set_role(db: Database, ctx: TenantContext, user_id: UUID, role: Role) -> members.Member:
    check_new_role(ctx, role)
    _, my_role = ctx.member()
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        owners, target = await _owners_and_member(conn, org_id, user_id)
        if not my_role.at_least(target.role):
            raise Forbidden(f"a {my_role} cannot change the role of a {target.role}")
        if target.role is Role.OWNER and role is not Role.OWNER and owners == [user_id]:
            raise Conflict("the last owner cannot be demoted; make someone else an owner first")
        updated = await members.set_role(conn, org_id=org_id, user_id=user_id, role=role)
        assert updated is not None
        await events.record(
            conn, ctx, "member", user_id, "member.role_changed", {"from": target.role.value, "to": role.value}
        )
        return updated


async def remove_member(db: Database, ctx: TenantContext, user_id: UUID) -> None:
    _, my_role = ctx.member()
    org_id = ctx.org_id
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        owners, target = await _owners_and_member(conn, org_id, user_id)
        if not my_role.at_least(target.role):
            raise Forbidden(f"a {my_role} cannot remove a {target.role}")
        if owners == [user_id]:
            raise Conflict("the last owner cannot be removed; make someone else an owner first")
        await members.revoke_keys_of(conn, org_id=org_id, user_id=user_id)
        await members.remove(conn, org_id=org_id, user_id=user_id)
        await events.record(conn, ctx, "member", user_id, "member.removed", {"role": target.role.value})


def check_new_role(ctx: TenantContext, role: Role) -> None:
    _, my_role = ctx.member()
    if not my_role.at_least(role):
        raise Forbidden(f"a {my_role} cannot grant the {role} role")


def check_future(when: datetime | None, field: str) -> None:
    from datetime import UTC

    if when is not None and when <= datetime.now(UTC):
        raise InvalidInput(f"{field}: must be in the future", field=field)
