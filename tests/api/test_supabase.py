"""Supabase compatibility: its Auth JWTs as credentials, and its `authenticated` role under our RLS."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.services.auth import Authenticator
from tests.api.conftest import Tenant, TenantFactory, build_app
from tests.api.test_tenancy_api import assert_problem
from tests.factories import create_job

SECRET = "super-secret-jwt-token-with-at-least-32-characters"
PROJECT = "https://abcd1234.supabase.co"


def token(sub: str, *, key: Any = SECRET, alg: str = "HS256", kid: str | None = None, **claims: Any) -> str:
    body = {
        "sub": sub,
        "aud": "authenticated",
        "iss": f"{PROJECT}/auth/v1",
        "exp": int(time.time()) + 300,
        "email": f"{sub[:8]}@example.com",
        "role": "authenticated",
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"supabase_url": PROJECT, "supabase_jwt_secret": SECRET}


async def test_hs256_token_signs_in_and_creates_an_organization(client: httpx.AsyncClient) -> None:
    sub = str(uuid.uuid4())
    h = {"Authorization": f"Bearer {token(sub)}"}
    me = (await client.get("/v1/me", headers=h)).json()
    assert me["credential"] == "jwt" and me["memberships"] == [] and me["organization_id"] is None
    # Without an organization, only organization-free operations are allowed.
    assert_problem(await client.get("/v1/members", headers=h), 401, "organization")
    created = (await client.post("/v1/organizations", json={"name": "Supa Org"}, headers=h)).json()
    assert created["api_key"] is None  # a JWT user needs no key
    org_id = created["organization"]["id"]
    # One membership: selected automatically; or named with the header.
    assert (await client.get("/v1/me", headers=h)).json()["role"] == "owner"
    r = await client.get("/v1/members", headers={**h, "X-Gpufleet-Organization": org_id})
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    assert_problem(await client.get("/v1/members", headers={**h, "X-Gpufleet-Organization": str(uuid.uuid4())}), 401)


async def test_a_supabase_user_accepts_an_invite_to_an_existing_account_with_its_token(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    sub = str(uuid.uuid4())
    h = {"Authorization": f"Bearer {token(sub)}"}
    me = (await client.get("/v1/me", headers=h)).json()  # signs in: the account now exists
    r = await client.post("/v1/invites", json={"email": me["user"]["email"]}, headers=admin.headers)
    invite = r.json()["token"]
    assert_problem(await client.post("/v1/invites/accept", json={"token": invite}), 401, "already exists")
    r = await client.post("/v1/invites/accept", json={"token": invite}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["id"] == me["user"]["id"] and r.json()["organization"]["id"] == str(admin.org.id)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"aud": "anon"}, "audience"),
        ({"iss": "https://evil.example/auth/v1"}, "issuer"),
    ],
)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, claims: dict[str, Any], message: str) -> None:
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {token(str(uuid.uuid4()), **claims)}"})
    assert_problem(r, 401)
    assert message in r.json()["detail"].lower()
    forged = token(str(uuid.uuid4()), key="another-secret-of-enough-length-to-sign-with")
    assert_problem(await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}), 401, "Signature")


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, ec.EllipticCurvePrivateKey]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json", key
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_es256_tokens_verified_with_jwks(db: Database, jwks_server: tuple[str, Any]) -> None:
    url, key = jwks_server
    app = build_app(db, supabase_url=PROJECT, supabase_jwks_url=url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        good = token(str(uuid.uuid4()), key=key, alg="ES256", kid="k1")
        assert (await c.get("/v1/me", headers={"Authorization": f"Bearer {good}"})).status_code == 200
        other = ec.generate_private_key(ec.SECP256R1())
        bad = token(str(uuid.uuid4()), key=other, alg="ES256", kid="k1")
        assert_problem(await c.get("/v1/me", headers={"Authorization": f"Bearer {bad}"}), 401)


class RotatingJwks:
    """A local JWKS endpoint whose published keys a test changes, counting the fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0

    def new_key(self, kid: str, *, publish: bool = True) -> ec.EllipticCurvePrivateKey:
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)
        return self.keys[kid]

    def body(self) -> bytes:
        self.fetches += 1
        jwks = [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.keys[k].public_key())), "kid": k, "alg": "ES256"}
            for k in self.published
        ]
        return json.dumps({"keys": jwks}).encode()


@pytest.fixture
def rotating_jwks() -> Iterator[tuple[str, RotatingJwks]]:
    state = RotatingJwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.body()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json", state
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_a_rotated_signing_key_is_fetched_at_once_and_refetches_are_rate_limited(
    db: Database, rotating_jwks: tuple[str, RotatingJwks]
) -> None:
    url, jwks = rotating_jwks
    k1 = jwks.new_key("k1")
    app = build_app(db, supabase_url=PROJECT, supabase_jwks_url=url)
    now = [1000.0]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        state = app.state.gpufleet
        state.authenticator = Authenticator(state.db, state.settings, clock=lambda: now[0])

        async def me(key: Any, kid: str) -> httpx.Response:
            signed = token(str(uuid.uuid4()), key=key, alg="ES256", kid=kid)
            return await c.get("/v1/me", headers={"Authorization": f"Bearer {signed}"})

        assert (await me(k1, "k1")).status_code == 200
        assert jwks.fetches == 1
        # The provider rotates: a token signed by the new key works at once (one refetch).
        now[0] += 5
        k2 = jwks.new_key("k2")
        assert (await me(k2, "k2")).status_code == 200
        assert (await me(k1, "k1")).status_code == 200
        assert jwks.fetches == 2
        # Made-up kids: refused, and at most one refetch per JWKS_REFETCH_MIN_S.
        bogus = jwks.new_key("k3", publish=False)
        for _ in range(5):
            assert_problem(await me(bogus, "k3"), 401, "unknown key")
        assert jwks.fetches == 2
        now[0] += Authenticator.JWKS_REFETCH_MIN_S + 1
        jwks.published.append("k3")
        assert (await me(bogus, "k3")).status_code == 200
        assert jwks.fetches == 3
        # Known keys are served from the cache until the document's time to live.
        assert (await me(k2, "k2")).status_code == 200 and jwks.fetches == 3
        now[0] += Authenticator.JWKS_TTL_S
        assert (await me(k2, "k2")).status_code == 200 and jwks.fetches == 4


async def test_a_jwks_without_usable_keys_is_401_not_500(db: Database, rotating_jwks: tuple[str, RotatingJwks]) -> None:
    url, jwks = rotating_jwks
    unpublished = jwks.new_key("k1", publish=False)  # the provider serves {"keys": []}
    app = build_app(db, supabase_url=PROJECT, supabase_jwks_url=url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        signed = token(str(uuid.uuid4()), key=unpublished, alg="ES256", kid="k1")
        r = await c.get("/v1/me", headers={"Authorization": f"Bearer {signed}"})
        assert_problem(r, 401, "invalid token")


async def test_concurrent_first_requests_of_a_new_identity_make_one_user(client: httpx.AsyncClient) -> None:
    sub = str(uuid.uuid4())
    for _ in range(3):
        signed = token(sub, email=f"{sub}@example.com")
        answers = await asyncio.gather(
            *(client.get("/v1/me", headers={"Authorization": f"Bearer {signed}"}) for _ in range(6))
        )
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        assert len({r.json()["user"]["id"] for r in answers}) == 1


async def _emulate_supabase(db: Database) -> None:
    """Supabase's mechanism: role `authenticated`, and auth.uid() read from request.jwt.claims."""
    async with db.owner_connection() as conn:
        await conn.execute(
            """do $$ begin
                 if not exists (select 1 from pg_roles where rolname = 'authenticated') then
                   create role authenticated nologin;
                 end if;
               exception when duplicate_object then null; end $$;
               create schema if not exists auth;
               create or replace function auth.uid() returns uuid language sql stable as
                 $f$ select nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::uuid $f$;
               grant usage on schema auth to authenticated;
               grant execute on function auth.uid() to authenticated;"""
        )
        assert await conn.fetchval("select gpufleet_enable_supabase_policies()") >= 15


async def test_authenticated_role_reads_only_its_organizations(db: Database, tenant: TenantFactory) -> None:
    a: Tenant = await tenant(Role.MEMBER)
    b: Tenant = await tenant(Role.OWNER)
    await create_job(db, a.org.id, name="a-job")
    await create_job(db, b.org.id, name="b-job")
    sub = uuid.uuid4()
    async with db.system_transaction() as conn:
        await conn.execute("update users set external_id = $2 where id = $1", a.user.id, str(sub))
    await _emulate_supabase(db)
    async with db.owner_connection() as conn, conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', $1, true)", json.dumps({"sub": str(sub)}))
        assert [r["name"] for r in await conn.fetch("select name from jobs")] == ["a-job"]
        assert [r["id"] for r in await conn.fetch("select id from organizations")] == [a.org.id]
        assert await conn.fetchval("select count(*) from users") == 1
        # Secrets stay out of reach, even of their own organization.
        with pytest.raises(Exception, match="permission denied"):
            await conn.fetch("select key_hash from api_keys")
    async with db.owner_connection() as conn, conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', $1, true)", json.dumps({"sub": str(uuid.uuid4())}))
        assert await conn.fetchval("select count(*) from jobs") == 0
        with pytest.raises(Exception, match="permission denied"):
            await conn.execute("update jobs set name = 'x'")
