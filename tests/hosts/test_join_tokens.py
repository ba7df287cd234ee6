"""Join tokens: shown once, stored as a hash, refused clearly, never used more than allowed."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.errors import Conflict, InvalidInput, NotFound, Unauthorized
from gpufleet.limits import MAX_PAGE
from gpufleet.services.host_views import page_join_tokens
from gpufleet.services.hosts import register_host
from gpufleet.services.join_tokens import create_join_token, revoke_join_token
from tests.factories import create_org, ctx_for
from tests.hosts.helpers import event_types, facts, gpus, sql, val


async def test_create_shows_the_secret_once_and_stores_its_hash(db: Database) -> None:
    org = await create_org(db)
    issued = await create_join_token(db, ctx_for(org.id), name="rack 4", max_uses=5, expires_in=timedelta(hours=2))
    assert security.well_formed(issued.secret, security.JOIN_TOKEN)
    assert issued.token.prefix == issued.secret[: len(issued.token.prefix)] and issued.token.uses == 0
    stored = await val(db, "select token_hash from join_tokens where id = $1", issued.token.id)
    assert stored == hashlib.sha256(issued.secret.encode()).digest()
    lifetime = await val(db, "select expires_at - created_at from join_tokens where id = $1", issued.token.id)
    assert lifetime == timedelta(hours=2)
    assert [t.id for t in await page_join_tokens(db, ctx_for(org.id), limit=MAX_PAGE)] == [issued.token.id]
    assert await event_types(db, org.id) == ["join_token.created"]


async def test_create_validates_its_arguments(db: Database) -> None:
    org = await create_org(db)
    with pytest.raises(InvalidInput, match="max_uses"):
        await create_join_token(db, ctx_for(org.id), max_uses=0)
    with pytest.raises(InvalidInput, match="expires_in"):
        await create_join_token(db, ctx_for(org.id), expires_in=timedelta(days=400))


async def test_refusals_say_why(db: Database) -> None:
    org = await create_org(db)

    async def try_register(secret: str) -> None:
        await register_host(db, secret, facts(), gpus(1))

    with pytest.raises(Unauthorized, match="malformed join token"):
        await try_register("gfj_not-a-token")
    with pytest.raises(Unauthorized, match="unknown join token"):
        await try_register(security.issue(security.JOIN_TOKEN).secret)

    expired = await create_join_token(db, ctx_for(org.id))
    await sql(db, "update join_tokens set expires_at = now() - interval '1 second' where id = $1", expired.token.id)
    with pytest.raises(Unauthorized, match="expired"):
        await try_register(expired.secret)

    revoked = await create_join_token(db, ctx_for(org.id))
    await revoke_join_token(db, ctx_for(org.id), token_id=revoked.token.id)
    await revoke_join_token(db, ctx_for(org.id), token_id=revoked.token.id)  # idempotent
    with pytest.raises(Unauthorized, match="revoked"):
        await try_register(revoked.secret)

    once = await create_join_token(db, ctx_for(org.id), max_uses=1)
    await try_register(once.secret)
    with pytest.raises(Unauthorized, match="used 1 of 1 times"):
        await register_host(db, once.secret, facts("node-2"), gpus(1, host="node-2"))

    active = await page_join_tokens(db, ctx_for(org.id), limit=MAX_PAGE)
    assert active == []
    assert len(await page_join_tokens(db, ctx_for(org.id), limit=MAX_PAGE, include_inactive=True)) == 3
    assert await event_types(db, org.id) == ["join_token.created"] * 2 + ["join_token.revoked", "join_token.created"]


async def test_revoke_is_tenant_scoped(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    issued = await create_join_token(db, ctx_for(a.id))
    with pytest.raises(NotFound):
        await revoke_join_token(db, ctx_for(b.id), token_id=issued.token.id)
    assert await page_join_tokens(db, ctx_for(b.id), limit=MAX_PAGE) == []


async def test_concurrent_registrations_never_exceed_max_uses(db: Database) -> None:
    org = await create_org(db)
    issued = await create_join_token(db, ctx_for(org.id), max_uses=3)
    results = await asyncio.gather(
        *(register_host(db, issued.secret, facts(f"n{i}"), gpus(1, host=f"n{i}")) for i in range(8)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Unauthorized)]
    assert len(ok) == 3 and len(refused) == 5
    assert await val(db, "select uses from join_tokens where id = $1", issued.token.id) == 3
    assert await val(db, "select count(*) from hosts where organization_id = $1", org.id) == 3


async def test_a_failed_registration_does_not_spend_a_use(db: Database) -> None:
    org = await create_org(db)
    issued = await create_join_token(db, ctx_for(org.id), max_uses=2)
    await register_host(db, issued.secret, facts(), gpus(1))
    with pytest.raises(Conflict, match="already registered"):
        await register_host(db, issued.secret, facts(), gpus(1))
    assert await val(db, "select uses from join_tokens where id = $1", issued.token.id) == 1
