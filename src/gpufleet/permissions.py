"""The one permission table: the least role each operation needs. Every route consults it."""

from __future__ import annotations

from gpufleet.domain.tenancy import Role

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
    "events.read": V,
    "ids.resolve": V,  # each kind also needs its own list permission (services/resolve.py)
    # Jobs and quotas (docs/api.md, "Jobs" and "Quotas").
    "jobs.submit": M,
    "jobs.list": V,
    "jobs.read": V,
    "jobs.cancel": M,
    "quotas.list": V,
    "quotas.set": A,
    "quotas.delete": A,
    # Costs (docs/costs.md): prices are admin-only; usage and budgets are visible to members.
    "prices.list": A,
    "prices.set": A,
    "usage.read": V,
    "budgets.list": V,
    "budgets.set": A,
    "budgets.delete": A,
    # Hosts, GPUs and join tokens (docs/api.md, "Hosts, GPUs and agents"). The agent's own
    # routes (/v1/agent/*) are not here: they authenticate with a join token or a host credential.
    "join_tokens.create": A,
    "join_tokens.list": A,
    "join_tokens.revoke": A,
    "hosts.list": V,
    "hosts.read": V,
    "hosts.manage": A,  # drain, undrain, maintenance
    "hosts.revoke": A,
    "hosts.remove": A,
    "gpus.list": V,
    "gpus.read": V,
    "gpus.manage": A,  # maintenance, clear health
    "metrics.read": V,
    "fleet.read": V,
    # Webhooks (docs/webhooks.md): URLs, secrets and receivers' answers are for admins only.
    "webhooks.read": A,
    "webhooks.manage": A,
    # Predictions and deployments (docs/predictions.md): any member runs models; admins manage deployments.
    "predictions.create": M,
    "predictions.list": V,
    "predictions.read": V,
    "predictions.cancel": M,
    "deployments.list": V,
    "deployments.read": V,
    "deployments.manage": A,
    # Models and files (docs/predictions.md): admins manage models; any member uploads input files.
    "models.list": V,
    "models.read": V,
    "models.create": A,
    "models.update": A,
    "models.push": A,
    "models.delete": A,
    "files.upload": M,
    "files.list": V,
    "files.read": V,
    "files.delete": M,
}


def allowed(role: Role, action: str) -> bool:
    return role.at_least(PERMISSIONS[action])
