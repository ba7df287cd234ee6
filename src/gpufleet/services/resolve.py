"""Short ids: turn the start of an id (git- or docker-style) into the ids it could mean."""

from __future__ import annotations

from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role, TenantContext
from gpufleet.errors import Forbidden, InvalidInput
from gpufleet.permissions import PERMISSIONS, allowed
from gpufleet.repo import resolve as repo
from gpufleet.repo.resolve import KINDS, IdMatch

MIN_PREFIX = 4
MAX_MATCHES = 10
_HEX = frozenset("0123456789abcdef")

# Seeing a kind's ids needs the right to list that kind.
LIST_ACTION = {
    "job": "jobs.list",
    "host": "hosts.list",
    "gpu": "gpus.list",
    "key": "api_keys.list",
    "join_token": "join_tokens.list",
    "invite": "invites.list",
    "quota": "quotas.list",
}
assert set(LIST_ACTION) == set(KINDS)


def id_range(prefix: str) -> tuple[UUID, UUID]:
    """The lowest and highest uuid starting with ``prefix`` (hex digits; dashes ignored)."""
    digits = prefix.strip().lower().replace("-", "")
    if not MIN_PREFIX <= len(digits) <= 32 or not set(digits) <= _HEX:
        raise InvalidInput(
            f"prefix must be {MIN_PREFIX} to 32 hex digits of an id (dashes allowed), got {prefix!r}", field="prefix"
        )
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


async def resolve(db: Database, ctx: TenantContext, kind: str, prefix: str) -> list[IdMatch]:
    """Up to ``MAX_MATCHES + 1`` rows of ``kind`` whose id starts with ``prefix`` (one more says "and more")."""
    me, my_role = ctx.member()
    if kind not in LIST_ACTION:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    action = LIST_ACTION[kind]
    if not allowed(my_role, action):
        raise Forbidden(f"{action} needs the {PERMISSIONS[action]} role or higher; this credential is {my_role}")
    low, high = id_range(prefix)
    org_id = ctx.org_id
    # Members see only their own API keys (as in the key listing).
    owner = None if kind != "key" or my_role.at_least(Role.ADMIN) else me
    async with db.transaction(org_id, user_id=ctx.user_id) as conn:
        return await repo.by_prefix(
            conn, org_id=org_id, kind=kind, low=low, high=high, limit=MAX_MATCHES + 1, owner=owner
        )
