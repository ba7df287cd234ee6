"""GET /v1/resolve: short ids, within the caller's organization and what its role may list."""

from __future__ import annotations

import uuid

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import TenantFactory
from tests.factories import create_host, create_job

A1 = uuid.UUID("abcd0000-0000-4000-8000-000000000001")
A2 = uuid.UUID("abcd0000-0000-4000-8000-000000000002")
B1 = uuid.UUID("abce0000-0000-4000-8000-000000000001")


async def _job_with_id(db: Database, org_id: uuid.UUID, job_id: uuid.UUID, name: str) -> None:
    job = await create_job(db, org_id, name=name)
    async with db.system_transaction() as conn:
        await conn.execute("update jobs set id = $2 where id = $1", job.id, job_id)


async def test_a_prefix_matches_by_id_range_within_the_organization(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    owner = await tenant(Role.OWNER)
    other = await tenant(Role.OWNER)
    await _job_with_id(db, owner.org.id, A1, "first")
    await _job_with_id(db, owner.org.id, A2, "second")
    await _job_with_id(db, owner.org.id, B1, "third")
    other_id = uuid.UUID("abcd0000-0000-4000-8000-000000000003")
    await _job_with_id(db, other.org.id, other_id, "not yours")

    async def resolve(kind: str, prefix: str, who: object = owner) -> httpx.Response:
        return await client.get("/v1/resolve", params={"kind": kind, "prefix": prefix}, headers=who.headers)  # type: ignore[attr-defined]

    r = await resolve("job", "abcd")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["id"] for m in body["matches"]] == [str(A1), str(A2)] and body["more"] is False
    assert [m["label"] for m in body["matches"]] == ["first", "second"]
    # dashes and case do not matter; a longer prefix narrows
    r = await resolve("job", "ABCD0000-0000-4000-8000-00000000000")
    assert len(r.json()["matches"]) == 2
    r = await resolve("job", "abcd0000-0000-4000-8000-000000000002")
    assert [m["id"] for m in r.json()["matches"]] == [str(A2)]
    r = await resolve("job", "abce")
    assert [m["id"] for m in r.json()["matches"]] == [str(B1)]
    # the other organization sees only its own
    r = await resolve("job", "abcd", other)
    assert [m["id"] for m in r.json()["matches"]] == [str(other_id)]
    r = await resolve("host", "abcd")
    assert r.json()["matches"] == []

    for bad in ("abc", "zzzz", "abcd" * 9):
        r = await resolve("job", bad)
        assert r.status_code == 422, (bad, r.text)
    r = await resolve("planet", "abcd")
    assert r.status_code == 422


async def test_other_kinds_and_the_list_permission_of_each(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    owner = await tenant(Role.OWNER)
    member = await tenant(Role.MEMBER, owner.org)
    host, gpus = await create_host(db, owner.org.id, name="box", gpus_spec=(("T4", 15360),))

    async def one(kind: str, full: uuid.UUID, who: object = owner) -> list[dict[str, str]]:
        r = await client.get("/v1/resolve", params={"kind": kind, "prefix": full.hex[:8]}, headers=who.headers)  # type: ignore[attr-defined]
        assert r.status_code == 200, r.text
        return r.json()["matches"]  # type: ignore[no-any-return]

    assert [m["label"] for m in await one("host", host.id)] == ["box"]
    assert [m["label"] for m in await one("gpu", gpus[0].id)] == ["box #0 T4"]
    every = {k["id"] for k in (await client.get("/v1/api-keys", headers=owner.headers)).json()["items"]}
    mine = {k["id"] for k in (await client.get("/v1/api-keys", headers=member.headers)).json()["items"]}
    owner_key = uuid.UUID((every - mine).pop())
    assert [m["id"] for m in await one("key", owner_key)] == [str(owner_key)]
    # a member sees only their own keys, as in the listing; invites need an admin
    assert await one("key", owner_key, member) == []
    r = await client.get("/v1/resolve", params={"kind": "invite", "prefix": "abcd"}, headers=member.headers)
    assert r.status_code == 403 and "invites.list" in r.json()["detail"]
