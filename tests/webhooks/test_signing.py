"""Standard Webhooks 1.0 signatures: known answers, the official verifier, rotation, secrets at rest."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from gpufleet.errors import ConfigurationError
from gpufleet.webhooks.signing import SecretBox, headers, new_secret, secret_key_bytes, sign

# The reference vector published with the Standard Webhooks specification (and Svix's libraries).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer() -> None:
    assert sign(secret_key_bytes(VECTOR_SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_the_official_verifier_accepts_what_we_sign() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key_bytes(secret)) == 32
    body = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    h = headers("msg_1", int(time.time()), body, [secret_key_bytes(secret)])
    assert Verifier(secret).verify(body, h)["type"] == "job.succeeded"
    with pytest.raises(WebhookVerificationError):
        Verifier(new_secret()).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body + b" ", h)


def test_rotation_signs_with_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    body = b"{}"
    h = headers("msg_2", int(time.time()), body, [secret_key_bytes(new), secret_key_bytes(old)])
    assert len(h["webhook-signature"].split(" ")) == 2
    Verifier(new).verify(body, h)
    Verifier(old).verify(body, h)


def test_secrets_are_sealed_and_bound_to_the_server_key() -> None:
    secret = new_secret()
    box = SecretBox("a server key of some length, 1234567890")
    sealed = box.seal(secret)
    assert secret.encode() not in sealed and secret_key_bytes(secret) not in sealed
    assert box.open(sealed) == secret
    with pytest.raises(ConfigurationError, match="GPUFLEET_SECRET_KEY changed"):
        SecretBox("another server key").open(sealed)
