"""Prediction webhooks: the organization's default signing secret, and the throttle of a
prediction's output/logs webhooks; the deliveries themselves are in ``repo.webhook_deliveries``."""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Connection as Conn


async def default_secret(conn: Conn, *, org_id: UUID) -> bytes | None:
    """The sealed default secret (``SecretBox``), or None before the organization's first use."""
    sealed: bytes | None = await conn.fetchval(
        "select secret_ciphertext from webhook_default_secrets where organization_id = $1", org_id
    )
    return sealed


async def ensure_default_secret(conn: Conn, *, org_id: UUID, sealed: bytes) -> bytes:
    """The organization's sealed default secret; ``sealed`` becomes it when there is none yet."""
    await conn.execute(
        """insert into webhook_default_secrets (organization_id, secret_ciphertext) values ($1, $2)
           on conflict (organization_id) do nothing""",
        org_id,
        sealed,
    )
    found = await default_secret(conn, org_id=org_id)
    assert found is not None
    return found


async def claim_throttle(conn: Conn, *, org_id: UUID, prediction_id: UUID, every_s: float) -> bool:
    """Whether an output/logs webhook may go now (none in the last ``every_s``); marks it sent."""
    done = await conn.fetchval(
        """update predictions set webhook_sent_at = now()
            where organization_id = $1 and id = $2
              and (webhook_sent_at is null or webhook_sent_at <= now() - make_interval(secs => $3))
        returning true""",
        org_id,
        prediction_id,
        every_s,
    )
    return bool(done)
