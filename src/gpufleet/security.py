"""Secrets gpufleet hands out: API keys, join tokens, host credentials, invite tokens.

Format: ``<prefix>_<43 chars of base64url(32 random bytes)><6 chars checksum>``. The checksum
(first 4 bytes of SHA-256 over prefix and body, base32) lets a mistyped or truncated secret be
refused before any database lookup. Only SHA-256 of the whole secret is stored; the secret is
shown once. Comparison of hashes is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY = "gfk"
JOIN_TOKEN = "gfj"  # noqa: S105 (a prefix, not a secret)
HOST_CREDENTIAL = "gfh"
INVITE_TOKEN = "gfi"  # noqa: S105 (a prefix, not a secret)
KINDS = frozenset({API_KEY, JOIN_TOKEN, HOST_CREDENTIAL, INVITE_TOKEN})

_BODY_LEN = 43  # base64url of 32 bytes, unpadded
_SUM_LEN = 6


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    secret: str  # shown to the user once, never stored
    hash: bytes  # SHA-256 of `secret`, stored
    display_prefix: str  # safe to list, e.g. "gfk_Ab12Cd34"


def _checksum(kind: str, body: str) -> str:
    digest = hashlib.sha256(f"{kind}_{body}".encode()).digest()[:4]
    return base64.b32encode(digest).decode().rstrip("=").lower()[:_SUM_LEN]


def issue(kind: str) -> IssuedSecret:
    if kind not in KINDS:
        raise ValueError(f"unknown secret kind {kind!r}")
    body = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    secret = f"{kind}_{body}{_checksum(kind, body)}"
    return IssuedSecret(secret, hash_secret(secret), f"{kind}_{body[:8]}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def well_formed(secret: str, kind: str) -> bool:
    """True when ``secret`` has the shape and checksum of a ``kind`` secret (no lookup needed)."""
    head, sep, rest = secret.partition("_")
    if not sep or head != kind or len(rest) != _BODY_LEN + _SUM_LEN:
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return hmac.compare_digest(check, _checksum(kind, body))
