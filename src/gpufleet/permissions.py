"""The one permission table: the least role each operation needs. Every route consults it."""

from __future__ import annotations

from gpufleet.domain import Role

V, M, A, OWN = Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER

PERMISSIONS: dict[str, Role] = {
    "me.read": V,
    "orgs.list": V,
    "orgs.create": V,
    "orgs.read": V,
    "orgs.update": A,
    "orgs.delete": OWN,
    "members.list": V,
    "members.update": A,
    "members.remove": A,
    "invites.create": A,
    "invites.list": A,
    "invites.read": A,
    "invites.revoke": A,
    "api_keys.create": M,
    "api_keys.list": M,
    "api_keys.read": M,
    "api_keys.revoke": M,
}


def allowed(role: Role, action: str) -> bool:
    return role.at_least(PERMISSIONS[action])
