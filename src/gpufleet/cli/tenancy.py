"""`gpufleet whoami|orgs|members|invites|keys`: organizations and access through the SDK."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import typer

from gpufleet.cli.common import console
from gpufleet.cli.remote import JsonOpt, WideOpt, act_on, client, id_arg, resolve_local, show, show_lines
from gpufleet.domain.tenancy import Role
from gpufleet.sdk import Client

orgs = typer.Typer(help="Organizations you belong to.", no_args_is_help=True)
members = typer.Typer(help="Members of the current organization.", no_args_is_help=True)
invites = typer.Typer(help="Invitations to the current organization.", no_args_is_help=True)
keys = typer.Typer(help="API keys of the current organization.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("whoami")(whoami)
    app.add_typer(orgs, name="orgs")
    app.add_typer(members, name="members")
    app.add_typer(invites, name="invites")
    app.add_typer(keys, name="keys")


def _org(c: Client, text: str) -> UUID:
    return resolve_local(
        text, "organization", lambda: ((m.organization_id, m.organization_name) for m in c.list_organizations())
    )


def _member(c: Client, text: str) -> UUID:
    return resolve_local(text, "member", lambda: ((m.user_id, m.email) for m in c.list_members()))


def whoami(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Who this credential is, and in which organization."""
    with client() as c:
        me = c.me()
    if as_json:
        show(me, True)
        return
    org = next((m for m in me.memberships if m.organization_id == me.organization_id), None)
    where = f"{org.organization_name} ({org.organization_slug})" if org else str(me.organization_id)
    console.print(f"{me.user.email}: {me.role} of {where}, via {me.credential}", highlight=False)
    show(me.memberships, False, ["organization_id", "organization_name", "organization_slug", "role"], wide=wide)


@orgs.command("list")
def orgs_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Organizations you belong to, with your role in each."""
    with client() as c:
        found = c.list_organizations()
    show(found, as_json, ["organization_id", "organization_name", "organization_slug", "role"], wide=wide)


@orgs.command("create")
def orgs_create(
    name: str, slug: str = typer.Option(None, help="URL-safe unique name."), as_json: bool = JsonOpt
) -> None:
    """Create an organization; you become its owner and get an owner key for it, shown once."""
    with client() as c:
        created = c.create_organization(name, slug)
    key = created.api_key
    show_lines(
        created,
        as_json,
        f"created {created.organization.slug} ({created.organization.id})",
        f"owner API key (shown once, store it now): {key.secret}" if key else None,
        highlight=True,
    )


@orgs.command("show")
def orgs_show(org_id: str = id_arg("organization"), as_json: bool = JsonOpt) -> None:
    """One organization: name, slug, settings."""
    with client() as c:
        show(c.get_organization(_org(c, org_id)), as_json, ["id", "name", "slug", "settings", "created_at"])


@orgs.command("update")
def orgs_update(org_id: str = id_arg("organization"), name: str = typer.Option(None), as_json: bool = JsonOpt) -> None:
    """Rename an organization (admins)."""
    with client() as c:
        show(c.update_organization(_org(c, org_id), name=name), as_json, ["id", "name", "slug"])


@orgs.command("delete")
def orgs_delete(
    org_id: str = id_arg("organization"), yes: bool = typer.Option(False, "--yes", help="Do not ask.")
) -> None:
    """Delete an organization and everything in it (owners only; refused while hosts or jobs remain)."""
    with client() as c:
        full = _org(c, org_id)
        if not yes:
            typer.confirm(f"Delete organization {full} and all its data?", abort=True)
        c.delete_organization(full)
    console.print(f"deleted {full}")


@members.command("list")
def members_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Members of the current organization and their roles."""
    with client() as c:
        found = c.list_members()
    show(found, as_json, ["user_id", "email", "name", "role", "created_at"], wide=wide)


@members.command("set-role")
def members_set_role(
    user_id: str = id_arg("member's user"), role: Role = typer.Argument(...), as_json: bool = JsonOpt
) -> None:
    """Change a member's role (at most yours)."""
    with client() as c:
        show(c.set_member_role(_member(c, user_id), role), as_json, ["user_id", "email", "role"])


@members.command("remove")
def members_remove(user_id: str = id_arg("member's user")) -> None:
    """Remove a member (their API keys for this organization are revoked)."""
    with client() as c:
        full = _member(c, user_id)
        c.remove_member(full)
    console.print(f"removed {full}")


@invites.command("create")
def invites_create(
    email: str,
    role: Role = typer.Option(Role.MEMBER, help="Role to grant (at most yours)."),
    days: int = typer.Option(7, help="Days until the invite expires."),
    as_json: bool = JsonOpt,
) -> None:
    """Invite someone; the token is shown once: give it to them for `gpufleet invites accept`."""
    with client() as c:
        inv = c.create_invite(email, role, days)
    show_lines(
        inv,
        as_json,
        f"invited {inv.email} as {inv.role}, expires {inv.expires_at:%Y-%m-%d %H:%M}",
        f"invite token (shown once): {inv.token}",
        highlight=True,
    )


@invites.command("list")
def invites_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Invitations to the current organization, pending and past."""
    with client() as c:
        found = c.list_invites()
    show(found, as_json, ["id", "email", "role", "expires_at", "accepted_at", "revoked_at"], wide=wide)


@invites.command("revoke")
def invites_revoke(invite_id: str = id_arg("invite"), as_json: bool = JsonOpt) -> None:
    """Revoke an invitation that was not accepted yet."""
    act_on("invite", invite_id, Client.revoke_invite, as_json, ["id", "email", "revoked_at"])


@invites.command("accept")
def invites_accept(token: str, name: str = typer.Option("", help="Your name."), as_json: bool = JsonOpt) -> None:
    """Accept an invite; prints your first API key for that organization, once."""
    with client(need_key=False) as c:
        acc = c.accept_invite(token, name)
    show_lines(
        acc,
        as_json,
        f"joined {acc.organization.name} as {acc.role}",
        f"your API key (shown once, store it now): {acc.api_key.secret}",
        highlight=True,
    )


@keys.command("create")
def keys_create(
    name: str,
    role: Role = typer.Option(None, help="At most your role; defaults to it."),
    expires_at: datetime = typer.Option(None, help="ISO timestamp with timezone."),
    as_json: bool = JsonOpt,
) -> None:
    """Create an API key; its secret is shown once."""
    with client() as c:
        key = c.create_api_key(name, role, expires_at)
    show_lines(
        key,
        as_json,
        f"created key {key.prefix}… ({key.id}) with role {key.role}",
        f"secret (shown once, store it now): {key.secret}",
        highlight=True,
    )


@keys.command("list")
def keys_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """API keys of the current organization (never their secrets)."""
    with client() as c:
        found = c.list_api_keys()
    show(found, as_json, ["id", "name", "prefix", "role", "created_at", "last_used_at", "expires_at"], wide=wide)


@keys.command("revoke")
def keys_revoke(key_id: str = id_arg("API key"), as_json: bool = JsonOpt) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    act_on("key", key_id, Client.revoke_api_key, as_json, ["id", "name", "revoked_at"])
