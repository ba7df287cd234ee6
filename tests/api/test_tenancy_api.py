"""Organizations, members, invites and API keys through the HTTP API: success and each documented error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, TenantFactory
from tests.factories import create_host

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, text: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"]
    if text:
        assert text in body.get("detail", ""), body


async def test_me_shows_user_and_memberships(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    r = await client.get("/v1/me", headers=t.headers)
    assert r.status_code == 200
    me = r.json()
    assert me["user"]["email"] == t.user.email and me["role"] == "admin" and me["credential"] == "api_key"
    assert [m["organization_id"] for m in me["memberships"]] == [str(t.org.id)]
    assert "key_hash" not in r.text and t.key not in r.text


async def test_organization_lifecycle(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    r = await client.post("/v1/organizations", json={"name": "Research Lab"}, headers=t.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["organization"]["slug"] == "research-lab"
    new_key = created["api_key"]["secret"]
    assert created["api_key"]["role"] == "owner" and new_key.startswith("gfk_")
    new_org = created["organization"]["id"]
    h = {"Authorization": f"Bearer {new_key}"}
    # The creator is the owner; both organizations are listed.
    listed = (await client.get("/v1/organizations", headers=t.headers)).json()
    assert {m["organization_id"] for m in listed} == {str(t.org.id), new_org}
    r = await client.patch(f"/v1/organizations/{new_org}", json={"name": "ML Lab", "settings": {"a": 1}}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "ML Lab" and r.json()["settings"] == {"a": 1}
    assert (await client.get(f"/v1/organizations/{new_org}", headers=h)).json()["name"] == "ML Lab"
    # Same slug again: conflict naming the field.
    assert_problem(
        await client.post("/v1/organizations", json={"name": "x", "slug": "research-lab"}, headers=t.headers), 409
    )
    assert (await client.delete(f"/v1/organizations/{new_org}", headers=h)).status_code == 204
    assert_problem(await client.get(f"/v1/organizations/{new_org}", headers=h), 401)  # its key went with it


async def test_delete_refused_while_hosts_remain(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    await create_host(db, t.org.id)
    r = await client.delete(f"/v1/organizations/{t.org.id}", headers=t.headers)
    assert_problem(r, 409, "1 host(s)")
    assert (await client.get(f"/v1/organizations/{t.org.id}", headers=t.headers)).status_code == 200


async def test_validation_errors_name_the_field(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    r = await client.post("/v1/organizations", json={"name": ""}, headers=t.headers)
    assert_problem(r, 422, "name")
    r = await client.post(
        "/v1/organizations", json={"name": "x", "id": "00000000-0000-0000-0000-000000000000"}, headers=t.headers
    )
    assert_problem(r, 422, "id")  # server-owned fields cannot be set
    r = await client.post("/v1/api-keys", json={"name": "k", "role": "emperor"}, headers=t.headers)
    assert_problem(r, 422, "role")
    r = await client.post(
        "/v1/organizations", content=b"{not json", headers={**t.headers, "content-type": "application/json"}
    )
    assert_problem(r, 422)
    r = await client.get("/v1/api-keys?limit=1000", headers=t.headers)
    assert_problem(r, 422, "limit")
    r = await client.get("/v1/api-keys?cursor=garbage", headers=t.headers)
    assert_problem(r, 422, "cursor")
    r = await client.get("/v1/organizations/not-a-uuid", headers=t.headers)
    assert_problem(r, 422, "org_id")


async def test_members_roles_and_the_last_owner(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    admin: Tenant = await tenant(Role.ADMIN, owner.org)
    member: Tenant = await tenant(Role.MEMBER, owner.org)
    page = (await client.get("/v1/members", headers=member.headers)).json()
    assert {m["user_id"] for m in page["items"]} == {str(owner.user.id), str(admin.user.id), str(member.user.id)}
    # The last owner can be neither demoted nor removed.
    assert_problem(
        await client.patch(f"/v1/members/{owner.user.id}", json={"role": "admin"}, headers=owner.headers),
        409,
        "last owner",
    )
    assert_problem(await client.delete(f"/v1/members/{owner.user.id}", headers=owner.headers), 409, "last owner")
    # An admin cannot grant more than its own role, nor touch an owner.
    assert_problem(
        await client.patch(f"/v1/members/{member.user.id}", json={"role": "owner"}, headers=admin.headers), 403
    )
    assert_problem(
        await client.patch(f"/v1/members/{owner.user.id}", json={"role": "viewer"}, headers=admin.headers), 403
    )
    r = await client.patch(f"/v1/members/{member.user.id}", json={"role": "viewer"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    # The demoted member's key is now limited to viewer, whatever role the key was created with.
    assert (await client.get("/v1/me", headers=member.headers)).json()["role"] == "viewer"
    assert_problem(await client.post("/v1/api-keys", json={"name": "k"}, headers=member.headers), 403)
    # With a second owner, the first can step down.
    assert (
        await client.patch(f"/v1/members/{admin.user.id}", json={"role": "owner"}, headers=owner.headers)
    ).status_code == 200
    assert (
        await client.patch(f"/v1/members/{owner.user.id}", json={"role": "admin"}, headers=owner.headers)
    ).status_code == 200
    # Removing a member revokes their keys.
    assert (await client.delete(f"/v1/members/{member.user.id}", headers=admin.headers)).status_code == 204
    assert_problem(await client.get("/v1/me", headers=member.headers), 401)
    assert_problem(await client.delete(f"/v1/members/{member.user.id}", headers=admin.headers), 404)


async def test_invites_are_single_use_and_expire(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    assert_problem(
        await client.post("/v1/invites", json={"email": "x@example.com", "role": "owner"}, headers=admin.headers), 403
    )
    assert_problem(
        await client.post("/v1/invites", json={"email": "not-an-email"}, headers=admin.headers), 422, "email"
    )
    r = await client.post(
        "/v1/invites", json={"email": "New.Person@Example.com", "role": "member"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    invite = r.json()
    token = invite["token"]
    assert invite["email"] == "new.person@example.com"
    listed = (await client.get("/v1/invites", headers=admin.headers)).json()["items"]
    assert [i["id"] for i in listed] == [invite["id"]] and "token" not in listed[0]
    # Accept: a new user, a membership and a first key, in one go.
    r = await client.post("/v1/invites/accept", json={"token": token, "name": "New Person"})
    assert r.status_code == 201, r.text
    accepted = r.json()
    assert accepted["role"] == "member" and accepted["organization"]["id"] == str(admin.org.id)
    h = {"Authorization": f"Bearer {accepted['api_key']['secret']}"}
    assert (await client.get("/v1/me", headers=h)).json()["user"]["email"] == "new.person@example.com"
    # Single use.
    assert_problem(await client.post("/v1/invites/accept", json={"token": token}), 401, "already used")
    assert_problem(await client.post("/v1/invites/accept", json={"token": token[:-2] + "zz"}), 401, "malformed")
    # Revoked and expired invites cannot be accepted.
    r2 = (await client.post("/v1/invites", json={"email": "b@example.com"}, headers=admin.headers)).json()
    assert (await client.delete(f"/v1/invites/{r2['id']}", headers=admin.headers)).json()["revoked_at"]
    assert_problem(await client.post("/v1/invites/accept", json={"token": r2["token"]}), 401)
    r3 = (await client.post("/v1/invites", json={"email": "c@example.com"}, headers=admin.headers)).json()
    async with db.system_transaction() as conn:
        await conn.execute(
            "update organization_invites set expires_at = now() - interval '1 second' where id = $1", r3["id"]
        )
    assert_problem(await client.post("/v1/invites/accept", json={"token": r3["token"]}), 401, "expired")
    # Inviting an existing member is a conflict.
    assert_problem(await client.post("/v1/invites", json={"email": admin.user.email}, headers=admin.headers), 409)
    # Revoking an accepted invite is a conflict.
    assert_problem(await client.delete(f"/v1/invites/{invite['id']}", headers=admin.headers), 409)
    async with db.system_transaction() as conn:
        hashes = await conn.fetch("select token_hash from organization_invites")
    assert all(len(h["token_hash"]) == 32 for h in hashes)


async def test_api_keys_lifecycle(client: httpx.AsyncClient, tenant: TenantFactory, db: Database) -> None:
    member: Tenant = await tenant(Role.MEMBER)
    admin: Tenant = await tenant(Role.ADMIN, member.org)
    assert_problem(await client.post("/v1/api-keys", json={"name": "k", "role": "admin"}, headers=member.headers), 403)
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert_problem(
        await client.post("/v1/api-keys", json={"name": "k", "expires_at": past}, headers=member.headers),
        422,
        "expires_at",
    )
    r = await client.post("/v1/api-keys", json={"name": "ci"}, headers=member.headers)
    assert r.status_code == 201
    created = r.json()
    secret = created["secret"]
    assert created["role"] == "member" and secret.startswith(created["prefix"])
    # Never shown again: not in the listing nor in the single read.
    listing = await client.get("/v1/api-keys", headers=member.headers)
    assert secret not in listing.text and "hash" not in listing.text
    assert {k["id"] for k in listing.json()["items"]} >= {created["id"]}
    assert secret not in (await client.get(f"/v1/api-keys/{created['id']}", headers=member.headers)).text
    # A member sees only their keys; an admin sees all.
    admin_ids = {k["id"] for k in (await client.get("/v1/api-keys", headers=admin.headers)).json()["items"]}
    member_ids = {k["id"] for k in (await client.get("/v1/api-keys", headers=member.headers)).json()["items"]}
    assert member_ids < admin_ids
    # The new key works, and stops working once revoked.
    h = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/me", headers=h)).status_code == 200
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=member.headers)).json()["revoked_at"]
    assert_problem(await client.get("/v1/me", headers=h), 401, "revoked")
    # last_used_at is recorded.
    async with db.system_transaction() as conn:
        used = await conn.fetchval("select last_used_at from api_keys where id = $1", created["id"])
    assert used is not None


async def test_bad_credentials_get_401_with_www_authenticate(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.OWNER)
    wrong_checksum = t.key[:-1] + ("a" if t.key[-1] != "a" else "b")
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Bearer gfk_short"},
        "wrong checksum": {"Authorization": f"Bearer {wrong_checksum}"},
        "not bearer": {"Authorization": f"Basic {t.key}"},
        "unknown": {"Authorization": "Bearer " + __import__("gpufleet.security", fromlist=["x"]).issue("gfk").secret},
    }
    for label, headers in cases.items():
        r = await client.get("/v1/me", headers=headers)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer"), label
    async with db.system_transaction() as conn:
        await conn.execute(
            "update api_keys set expires_at = now() - interval '1 second' where organization_id = $1", t.org.id
        )
    assert_problem(await client.get("/v1/me", headers=t.headers), 401, "expired")


async def test_request_ids(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    assert len((await client.get("/nope")).headers["x-request-id"]) == 32


async def test_pagination_walks_every_item_once(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.OWNER)
    for i in range(7):
        assert (await client.post("/v1/api-keys", json={"name": f"k{i}"}, headers=t.headers)).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/api-keys", params=params, headers=t.headers)).json()
        seen += [k["id"] for k in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8
