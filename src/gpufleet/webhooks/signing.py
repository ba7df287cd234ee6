"""Standard Webhooks 1.0 signatures, and the signing secrets at rest.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (the attempt's time, Unix seconds) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, several separated by
spaces while a rotated secret is still in its overlap window. Secrets are ``whsec_<base64>``.

The server must sign with the secret, so it cannot keep only a hash: it keeps it encrypted
(AES-256-GCM under a key derived from GPUFLEET_SECRET_KEY, see docs/security.md, "Webhooks").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gpufleet.errors import ConfigurationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
_VERSION = b"\x01"
_AAD = b"gpufleet webhook secret"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(msg_id: str, timestamp: int, body: bytes, keys: list[bytes]) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per key (the newest first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, msg_id, timestamp, body) for k in keys),
    }


def message_id(delivery_id: object) -> str:
    """The ``webhook-id`` of a delivery: the same on every retry and redelivery, so receivers de-duplicate."""
    return f"msg_{delivery_id}"


class SecretBox:
    """Encrypts signing secrets for the database and decrypts them to sign."""

    def __init__(self, server_secret: str) -> None:
        key = hashlib.sha256(b"gpufleet webhook secrets v1\x00" + server_secret.encode()).digest()
        self._aead = AESGCM(key)

    def seal(self, secret: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), _AAD)

    def open(self, sealed: bytes) -> str:
        if sealed[:1] != _VERSION:
            raise ConfigurationError("a webhook secret is stored in an unknown format; rotate the webhook's secret")
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], _AAD).decode()
        except InvalidTag as exc:
            raise ConfigurationError(
                "a webhook secret cannot be decrypted: GPUFLEET_SECRET_KEY changed since it was created; "
                "rotate the webhook's secret"
            ) from exc
