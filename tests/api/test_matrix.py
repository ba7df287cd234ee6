"""Matrices generated from the OpenAPI document, so that a new endpoint cannot escape them.

* cross-tenant: for every operation that takes an object id, org B's credential on org A's
  object gets 404 (exactly like a missing object) and changes nothing in org A;
* roles: every operation, against every role, agrees with the one permission table.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.inference import archive
from gpufleet.permissions import PERMISSIONS
from tests.api.conftest import Tenant, TenantFactory
from tests.factories import create_host
from tests.tenancy import TENANT_TABLES_SQL

# Operations anyone may call (they carry their own credential in the body).
PUBLIC = {("POST", "/v1/invites/accept")}
# Node agents' operations carry their own credential (a join token, then the host credential),
# never an API key: they are outside the user permission table and the role matrix.
PUBLIC |= {("POST", "/v1/agent/register"), ("POST", "/v1/agent/heartbeat"), ("POST", "/v1/agent/reconcile")}
PUBLIC |= {("GET", "/v1/agent/assignments"), ("POST", "/v1/agent/assignments")}
# ... and so do the reports about their jobs; another organization's agent gets 409 there
# (tests/api/test_execution_api.py), never another tenant's data.
PUBLIC |= {("POST", f"/v1/agent/jobs/{{job_id}}/{what}") for what in ("started", "exit", "logs")}
PUBLIC |= {("POST", "/v1/agent/reports")}  # the three at once: another organization's job is `stale`
# The Model Runner's downloads and uploads: another organization's host gets 404
# (tests/api/test_agent_models_api.py).
PUBLIC |= {("GET", "/v1/agent/model-versions/{version_id}/archive"), ("POST", "/v1/agent/files")}
PUBLIC |= {("GET", "/v1/agent/files/{file_id}")}
# ... and so do the model runner's (docs/predictions.md): a stale or foreign replica gets 409 or `ok: false`.
PUBLIC |= {("POST", "/v1/agent/replicas/{replica_id}/state"), ("POST", "/v1/agent/predictions/claim")}
PUBLIC |= {("POST", "/v1/agent/predictions/events")}

# A valid body for each operation that takes one; a new operation must be added here.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/organizations"): {"name": "Matrix Org"},
    ("PATCH", "/v1/organizations/{org_id}"): {"name": "renamed"},
    ("PATCH", "/v1/members/{user_id}"): {"role": "viewer"},
    ("POST", "/v1/invites"): {"email": "matrix@example.com"},
    ("POST", "/v1/api-keys"): {"name": "matrix"},
    ("POST", "/v1/jobs"): {"name": "matrix", "command": ["true"]},
    ("PUT", "/v1/quotas"): {"gpu_model": "A100", "max_gpus": 8},
    ("POST", "/v1/join-tokens"): {"name": "matrix", "max_uses": 1},
    ("POST", "/v1/hosts/{host_id}/drain"): {"reason": "matrix"},
    ("POST", "/v1/hosts/{host_id}/maintenance"): {"on": True, "reason": "matrix"},
    ("POST", "/v1/gpus/{gpu_id}/maintenance"): {"on": True, "reason": "matrix"},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"description": "matrix"},
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): {},
    ("POST", "/v1/models/{owner}/{name}/predictions"): {"input": {"text": "x"}},
    ("POST", "/v1/deployments/{owner}/{name}/predictions"): {"input": {"text": "x"}},
    ("PATCH", "/v1/deployments/{owner}/{name}"): {"max_instances": 2},
    ("PATCH", "/v1/models/{owner}/{name}"): {"description": "matrix"},
}


_ECHO_ARCHIVE = archive.pack(Path(__file__).resolve().parents[2] / "examples" / "models" / "echo")


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    doc = app.openapi()
    out = []
    for path, methods in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in methods.items():
            out.append((method.upper(), path, op))
    return out


async def _fingerprint(db: Database, org_id: uuid.UUID) -> dict[str, tuple[int, Any]]:
    async with db.system_transaction() as conn:
        tables = [r[0] for r in await conn.fetch(TENANT_TABLES_SQL)]
        out = {}
        for t in tables:
            col = "id" if t == "organizations" else "organization_id"
            row = await conn.fetchrow(f"select count(*), max(updated_at) from {t} where {col} = $1", org_id)
            out[t] = (row[0], row[1])
        return out


async def test_every_v1_operation_is_in_the_permission_table(app: FastAPI) -> None:
    for method, path, op in operations(app):
        if (method, path) in PUBLIC:
            continue
        assert op.get("x-permission") in PERMISSIONS, f"{method} {path} does not consult the permission table"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"webhook_allow_networks": "127.0.0.0/8"}  # an org-A webhook to a local address


async def test_cross_tenant_objects_are_404_and_untouched(
    app: FastAPI, client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    a: Tenant = await tenant(Role.OWNER)
    a_member: Tenant = await tenant(Role.MEMBER, a.org)
    b: Tenant = await tenant(Role.OWNER)
    invite = (await client.post("/v1/invites", json={"email": "x@example.com"}, headers=a.headers)).json()
    a_key = (await client.post("/v1/api-keys", json={"name": "a"}, headers=a_member.headers)).json()
    a_job = (await client.post("/v1/jobs", json={"name": "a", "command": ["true"]}, headers=a.headers)).json()
    a_quota = (await client.put("/v1/quotas", json={"max_gpus": 4}, headers=a.headers)).json()
    a_budget = (await client.put("/v1/budgets", json={"amount": "100"}, headers=a.headers)).json()
    a_host, a_gpus = await create_host(db, a.org.id)
    a_token = (await client.post("/v1/join-tokens", json={}, headers=a.headers)).json()
    hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["job.*"]}  # admitted by app_settings below
    a_webhook = (await client.post("/v1/webhooks", json=hook, headers=a.headers)).json()
    a_delivery = (await client.post(f"/v1/webhooks/{a_webhook['id']}/test", headers=a.headers)).json()
    await client.post("/v1/models", json={"name": "matrix"}, headers=a.headers)
    a_version = (
        await client.post(f"/v1/models/{a.org.slug}/matrix/versions", content=_ECHO_ARCHIVE, headers=a.headers)
    ).json()
    a_file = (await client.post("/v1/files", files={"content": ("a.txt", b"a")}, headers=a.headers)).json()
    # A deployment of the same name as the model, and a prediction through it.
    await client.post("/v1/deployments", json={"name": "matrix", "model": f"{a.org.slug}/matrix"}, headers=a.headers)
    a_prediction = (
        await client.post(
            f"/v1/deployments/{a.org.slug}/matrix/predictions", json={"input": {"text": "a"}}, headers=a.headers
        )
    ).json()
    objects = {
        "org_id": str(a.org.id),
        "user_id": str(a_member.user.id),
        "invite_id": invite["id"],
        "key_id": a_key["id"],
        "job_id": a_job["id"],
        "quota_id": a_quota["id"],
        "budget_id": a_budget["id"],
        "host_id": str(a_host.id),
        "gpu_id": str(a_gpus[0].id),
        "token_id": a_token["id"],
        "webhook_id": a_webhook["id"],
        "delivery_id": a_delivery["id"],
        "owner": a.org.slug,
        "name": "matrix",
        "version_id": a_version["id"],
        "file_id": a_file["id"],
        "prediction_id": a_prediction["id"],
    }
    checked = 0
    before = await _fingerprint(db, a.org.id)
    for method, path, op in operations(app):
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        if not params or (method, path) in PUBLIC:
            continue
        missing = [p for p in params if p not in objects]
        assert not missing, f"{method} {path}: add an org-A object for {missing} to this test"
        url = path.format(**objects)
        body = BODIES.get((method, path))
        r = await client.request(method, url, json=body, headers=b.headers)
        assert r.status_code == 404, f"{method} {url} with org B's credential: {r.status_code} {r.text}"
        # ... and exactly what a missing object gets.
        ghost = path.format(**{k: str(uuid.uuid4()) for k in objects})
        r2 = await client.request(method, ghost, json=body, headers=b.headers)
        assert (r2.status_code, r2.json()["title"]) == (404, r.json()["title"])
        checked += 1
    assert checked >= 8
    assert await _fingerprint(db, a.org.id) == before


async def test_role_matrix_follows_the_permission_table(
    app: FastAPI, client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    by_role = {Role.OWNER: owner}
    for role in (Role.ADMIN, Role.MEMBER, Role.VIEWER):
        by_role[role] = await tenant(role, owner.org)
    checked = 0
    for method, path, op in operations(app):
        action = op.get("x-permission")
        if action is None:
            continue
        needed = PERMISSIONS[action]
        for role, t in by_role.items():
            # Random ids: an allowed caller gets past the permission check and finds nothing.
            url = path.format(**{p["name"]: str(uuid.uuid4()) for p in op.get("parameters", []) if p["in"] == "path"})
            r = await client.request(method, url, json=BODIES.get((method, path)), headers=t.headers)
            if role.at_least(needed):
                assert r.status_code not in (401, 403), f"{role} on {method} {path}: {r.status_code} {r.text}"
            else:
                assert r.status_code == 403, f"{role} on {method} {path}: {r.status_code} {r.text}"
                assert needed.value in r.json()["detail"]
            checked += 1
    assert checked >= 4 * 15
