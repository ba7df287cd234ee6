"""What one tenant can learn or take of another's identities: an invite addressed to an existing
account yields a credential only to a request authenticated as that account; an organization's
admins never see their members' other organizations; a slug conflict does not say who holds it."""

from __future__ import annotations

import asyncio

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem


async def _invite(client: httpx.AsyncClient, admin: Tenant, email: str) -> dict[str, str]:
    r = await client.post("/v1/invites", json={"email": email, "role": "member"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    invite: dict[str, str] = r.json()
    return invite


async def _traces(db: Database, admin: Tenant, bob: Tenant) -> tuple[int, int, bool]:
    """Bob's memberships and API keys in the admin's organization, and whether the invite is spent."""
    async with db.system_transaction() as conn:
        members = await conn.fetchval(
            "select count(*) from organization_members where organization_id = $1 and user_id = $2",
            admin.org.id,
            bob.user.id,
        )
        keys = await conn.fetchval(
            "select count(*) from api_keys where organization_id = $1 and user_id = $2", admin.org.id, bob.user.id
        )
        spent = await conn.fetchval(
            "select bool_or(accepted_at is not null) from organization_invites where organization_id = $1",
            admin.org.id,
        )
    return members, keys, bool(spent)


async def test_an_invite_for_an_existing_account_needs_that_account(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    bob: Tenant = await tenant(Role.OWNER)  # owns another organization
    invite = await _invite(client, admin, bob.user.email.upper())

    # The admin holds the token, but not Bob's credentials: nothing is created, and the answer says why.
    r = await client.post("/v1/invites/accept", json={"token": invite["token"], "name": "Not Bob"})
    assert_problem(r, 401, "already exists")
    assert "signed in as that account" in r.json()["detail"]
    assert "api_key" not in r.text and "gfk_" not in r.text
    # Signed in as someone else (the admin himself): refused too.
    r = await client.post("/v1/invites/accept", json={"token": invite["token"]}, headers=admin.headers)
    assert_problem(r, 403, "addressed to another account")
    assert await _traces(db, admin, bob) == (0, 0, False)

    # Bob, signed in with his own key (of his other organization), accepts: his account joins.
    r = await client.post("/v1/invites/accept", json={"token": invite["token"], "name": "ignored"}, headers=bob.headers)
    assert r.status_code == 201, r.text
    accepted = r.json()
    assert accepted["user"]["id"] == str(bob.user.id) and accepted["user"]["name"] == bob.user.name
    assert accepted["organization"]["id"] == str(admin.org.id) and accepted["role"] == "member"
    assert await _traces(db, admin, bob) == (1, 1, True)
    assert_problem(await client.post("/v1/invites/accept", json={"token": invite["token"]}, headers=bob.headers), 401)

    # What the admin can read about Bob names nothing of his other organization.
    org_b = (str(bob.org.id), bob.org.slug, bob.org.name)
    for path in ("/v1/members", "/v1/invites", "/v1/me", "/v1/organizations", "/v1/api-keys"):
        r = await client.get(path, headers=admin.headers)
        assert r.status_code == 200, (path, r.text)
        assert not any(x in r.text for x in org_b), (path, r.text)
    r = await client.patch(f"/v1/members/{bob.user.id}", json={"role": "viewer"}, headers=admin.headers)
    assert r.status_code == 200 and not any(x in r.text for x in org_b)


async def test_two_invites_of_one_new_email_accepted_at_once_make_one_account(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    first: Tenant = await tenant(Role.ADMIN)
    second: Tenant = await tenant(Role.ADMIN)
    for n in range(4):  # a race: repeat so that the two acceptances really overlap
        email = f"dana{n}@example.com"
        tokens = [(await _invite(client, admin, email))["token"] for admin in (first, second)]
        answers = await asyncio.gather(
            *(client.post("/v1/invites/accept", json={"token": t, "name": "Dana"}) for t in tokens)
        )
        codes = sorted(r.status_code for r in answers)
        # One account is made; the other acceptance is refused with a reason, never a 500.
        assert codes[0] == 201 and codes[1] in (401, 409), [r.text for r in answers]
        assert "Nothing was changed" in next(r for r in answers if r.status_code != 201).json()["detail"]


async def test_an_invite_for_a_new_email_still_creates_the_account(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    invite = await _invite(client, admin, "Carol@Example.com")
    # A bad credential is a 401, never an anonymous acceptance.
    r = await client.post(
        "/v1/invites/accept", json={"token": invite["token"]}, headers={"Authorization": "Bearer gfk_nonsense"}
    )
    assert_problem(r, 401)
    # No account has this email: the token is enough (a caller's own key, as the CLI sends it, plays no part).
    other: Tenant = await tenant(Role.OWNER)
    r = await client.post("/v1/invites/accept", json={"token": invite["token"], "name": "Carol"}, headers=other.headers)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["email"] == "carol@example.com" and r.json()["user"]["id"] != str(other.user.id)
    assert r.json()["api_key"]["secret"].startswith("gfk_")


async def test_a_slug_conflict_does_not_say_that_another_organization_holds_it(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    mine: Tenant = await tenant(Role.OWNER)
    theirs: Tenant = await tenant(Role.OWNER)
    own = (
        await client.post("/v1/organizations", json={"name": "Mine", "slug": "mine-lab"}, headers=mine.headers)
    ).json()
    for slug in (theirs.org.slug, own["organization"]["slug"]):  # another tenant's, or one's own: the same answer
        r = await client.post("/v1/organizations", json={"name": "x", "slug": slug}, headers=mine.headers)
        assert_problem(r, 409, "slug not available")
        detail = r.json()["detail"]
        assert slug not in detail and "taken" not in detail and "exists" not in detail, detail
        assert r.json().get("field") == "slug"
