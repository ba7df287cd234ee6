"""Authentication: API keys and (optionally) Supabase Auth JWTs, resolved to a Principal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import jwt

from gpufleet import security
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.errors import Unauthorized
from gpufleet.repo import api_keys, members, orgs
from gpufleet.ttl_cache import TTLCache


def secret_hash(secret: str, kind: str, malformed: str) -> bytes:
    """The hash a ``kind`` secret is stored under; ``Unauthorized(malformed)`` before any lookup
    when its shape or checksum is wrong."""
    if not security.well_formed(secret, kind):
        raise Unauthorized(malformed)
    return security.hash_secret(secret)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, in which organization, with which effective role."""

    user_id: UUID
    org_id: UUID | None  # None: a signed-in user who belongs to no organization yet
    role: Role
    credential: str  # "api_key" or "jwt"
    key_id: UUID | None = None

    def require_org(self) -> UUID:
        if self.org_id is None:
            raise Unauthorized("this credential is not tied to an organization; pass X-Gpufleet-Organization")
        return self.org_id


def _lower(a: Role, b: Role) -> Role:
    return a if a.rank <= b.rank else b


class Authenticator:
    """Resolves credentials; one per app. Verified API keys are remembered for
    ``auth_cache_ttl_s`` (the bound on revocation elsewhere; ``invalidate`` makes it "at once"
    here), the JWKS document for ``JWKS_TTL_S``; both in the one ``TTLCache``."""

    TOUCH_EVERY_S = 60.0
    CACHE_MAX = 10_000
    JWKS_TTL_S = 600.0
    # An unknown ``kid`` (a rotated key) refetches the JWKS at once, but at most this often, so
    # tokens with made-up kids cannot turn into a request flood against the identity provider.
    JWKS_REFETCH_MIN_S = 30.0

    def __init__(self, db: Database, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._touched: dict[UUID, float] = {}
        self._cache: TTLCache[bytes, Principal] = TTLCache(max_entries=self.CACHE_MAX, clock=clock)
        self._jwks: TTLCache[str, jwt.PyJWKSet] = TTLCache(max_entries=1, clock=clock)
        self._jwks_refetched_at: float | None = None
        self._jwks_lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget cached credentials at once (after a revocation or a role change here)."""
        self._cache.clear()

    async def api_key(self, secret: str) -> Principal:
        key_hash = secret_hash(secret, security.API_KEY, "malformed API key (expected gfk_... with a valid checksum)")
        cached = self._cache.get(key_hash)
        if cached is not None:
            return cached
        now = self.clock()  # before the lookup: the answer is never kept longer than the TTL
        async with self.db.system_transaction() as conn:
            found = await api_keys.principal_by_hash(conn, key_hash=key_hash)
            if found is None:
                raise Unauthorized("unknown API key")
            if found.revoked:
                raise Unauthorized("this API key was revoked")
            if found.expired:
                raise Unauthorized("this API key has expired")
            if found.member_role is None or not found.user_active:
                raise Unauthorized("the owner of this API key is no longer a member of its organization")
            if now - self._touched.get(found.key_id, 0.0) >= self.TOUCH_EVERY_S:
                self._touched[found.key_id] = now
                await api_keys.touch(conn, key_ids=[found.key_id])
        principal = Principal(
            user_id=found.user_id,
            org_id=found.organization_id,
            # A key never exceeds its owner's current role, even after a demotion.
            role=_lower(found.key_role, found.member_role),
            credential="api_key",
            key_id=found.key_id,
        )
        until = now + self.settings.auth_cache_ttl_s
        if found.expires_at is not None:  # never past the key's own expiry
            until = min(until, now + (found.expires_at.timestamp() - time.time()))
        self._cache.put(key_hash, principal, until=until)
        return principal

    @property
    def jwt_enabled(self) -> bool:
        s = self.settings
        return bool((s.supabase_jwt_secret and s.supabase_jwt_secret.get_secret_value()) or s.supabase_jwks_url)

    async def _signing_key(self, token: str) -> tuple[Any, list[str]]:
        s = self.settings
        header = jwt.get_unverified_header(token)
        alg = header.get("alg", "")
        if alg == "HS256":
            if not (s.supabase_jwt_secret and s.supabase_jwt_secret.get_secret_value()):
                raise Unauthorized("HS256 tokens are not accepted by this server")
            return s.supabase_jwt_secret.get_secret_value(), ["HS256"]
        if alg in ("ES256", "RS256") and s.supabase_jwks_url:
            kid = header.get("kid")
            key = self._jwk(await self._jwks_doc(refetch=False), kid)
            if key is None:
                key = self._jwk(await self._jwks_doc(refetch=True), kid)
            if key is None:
                raise Unauthorized("token signed by an unknown key")
            return key, [alg]
        raise Unauthorized(f"unsupported token algorithm {alg!r}")

    @staticmethod
    def _jwk(keys: jwt.PyJWKSet | None, kid: object) -> Any:
        for key in keys.keys if keys is not None else []:
            if kid is None or key.key_id == kid:
                return key.key
        return None

    async def _jwks_doc(self, *, refetch: bool) -> jwt.PyJWKSet | None:
        """The signing keys; fetched when missing or older than ``JWKS_TTL_S``, and again for an
        unknown ``kid`` (``refetch``) when the last such refetch is ``JWKS_REFETCH_MIN_S`` old."""
        url = self.settings.supabase_jwks_url
        assert url is not None
        async with self._jwks_lock:
            keys = self._jwks.get(url)
            now = self.clock()
            if keys is not None and refetch:
                last = self._jwks_refetched_at
                if last is not None and now - last < self.JWKS_REFETCH_MIN_S:
                    return None  # the caller already looked in ``keys``
                self._jwks_refetched_at = now
                keys = None
            if keys is None:
                async with httpx.AsyncClient(timeout=5) as client:
                    resp = await client.get(url)
                    resp.raise_for_status()
                    keys = jwt.PyJWKSet.from_dict(resp.json())
                self._jwks.put(url, keys, until=now + self.JWKS_TTL_S)
            return keys

    async def bearer_jwt(self, token: str, org_hint: UUID | None) -> Principal:
        s = self.settings
        try:
            key, algorithms = await self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience="authenticated",
                issuer=f"{s.supabase_url.rstrip('/')}/auth/v1" if s.supabase_url else None,
                options={"require": ["exp", "sub", "aud"], "verify_iss": bool(s.supabase_url)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKSetError, jwt.PyJWKError, httpx.HTTPError, ValueError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        sub = str(claims["sub"])
        async with self.db.system_transaction() as conn:
            user = await orgs.user_by_external_id(conn, external_id=sub)
            if user is None:
                email = str(claims.get("email") or f"{sub}@users.supabase")
                user = await orgs.create_user(conn, email=email, name=str(claims.get("name", "")), external_id=sub)
                # None: the email is taken, by a concurrent first request of this identity or by another account
                user = user or await orgs.user_by_external_id(conn, external_id=sub)
                if user is None:
                    raise Unauthorized("a gpufleet user with this email exists and is not linked to this identity")
            if not user.is_active:
                raise Unauthorized("user is deactivated")
            mine = await members.memberships_of(conn, user_id=user.id)
        chosen = None
        if org_hint is not None:
            chosen = next((m for m in mine if m.organization_id == org_hint), None)
            if chosen is None:
                raise Unauthorized("not a member of the organization named by X-Gpufleet-Organization")
        elif len(mine) == 1:
            chosen = mine[0]
        if chosen is None:
            return Principal(user_id=user.id, org_id=None, role=Role.VIEWER, credential="jwt")
        return Principal(user_id=user.id, org_id=chosen.organization_id, role=chosen.role, credential="jwt")
