"""/v1/agent/model-versions/{id}/archive and /v1/agent/files*: what the Model Runner downloads and
uploads with a host credential; another organization's host gets 404, an API key 401."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.inference import archive
from tests.api.agent_helpers import bearer, placed_job, register
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_tenancy_api import assert_problem

ECHO = Path(__file__).resolve().parents[2] / "examples" / "models" / "echo"
GZIP = {"Content-Type": "application/gzip"}


async def _push(client: httpx.AsyncClient, db: Database, admin: Tenant) -> tuple[uuid.UUID, str, bytes]:
    """The echo example pushed to ORG/echo: (version id, digest, archive)."""
    r = await client.post("/v1/models", json={"owner": admin.org.slug, "name": "echo"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    data = archive.pack(ECHO)
    r = await client.post(f"/v1/models/{admin.org.slug}/echo/versions", content=data, headers=admin.headers | GZIP)
    assert r.status_code == 201, r.text
    digest = r.json()["id"]
    async with db.system_transaction() as conn:
        version_id = await conn.fetchval("select id from model_versions where digest = $1", digest)
    return version_id, digest, data


async def test_a_host_downloads_its_organizations_version_archives(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    other: Tenant = await tenant(Role.ADMIN)
    mine = (await register(client, admin, "node-1"))["credential"]
    theirs = (await register(client, other, "node-9"))["credential"]
    version_id, digest, data = await _push(client, db, admin)
    path = f"/v1/agent/model-versions/{version_id}/archive"
    r = await client.get(path, headers=bearer(mine))
    assert r.status_code == 200 and r.content == data
    assert r.headers["x-gpufleet-digest"] == digest and r.headers["content-type"] == "application/gzip"
    assert archive.version_digest(admin.org.slug, "echo", r.content) == digest
    assert_problem(await client.get(path, headers=bearer(theirs)), 404)
    assert_problem(await client.get(f"/v1/agent/model-versions/{uuid.uuid4()}/archive", headers=bearer(mine)), 404)
    assert_problem(await client.get(path, headers=admin.headers), 401)  # an API key is not a host credential


async def _prediction_on(db: Database, org_id: uuid.UUID, version_id: uuid.UUID, job_id: str) -> uuid.UUID:
    """A deployment of the version, a replica on the job, a prediction it runs (what the server's
    claim would have made)."""
    async with db.system_transaction() as conn:
        model_id = await conn.fetchval("select model_id from model_versions where id = $1", version_id)
        deployment = await conn.fetchval(
            """insert into deployments (organization_id, name, model_id, version_id)
               values ($1, 'echo', $2, $3) returning id""",
            org_id,
            model_id,
            version_id,
        )
        await conn.execute("update jobs set kind = 'replica' where id = $1", uuid.UUID(job_id))
        replica = await conn.fetchval(
            """insert into replicas (organization_id, deployment_id, version_id, job_id, status)
               values ($1, $2, $3, $4, 'ready') returning id""",
            org_id,
            deployment,
            version_id,
            uuid.UUID(job_id),
        )
        prediction: uuid.UUID = await conn.fetchval(
            """insert into predictions (organization_id, model, version, deployment_id, version_id, replica_id,
                                        status, input)
               values ($1, 'echo', 'x', $2, $3, $4, 'processing', '{"text": "hi"}') returning id""",
            org_id,
            deployment,
            version_id,
            replica,
        )
    return prediction


async def test_output_files_belong_to_a_prediction_running_on_the_host(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    other: Tenant = await tenant(Role.ADMIN)
    mine = (await register(client, admin, "node-1"))["credential"]
    second = (await register(client, admin, "node-2"))["credential"]
    theirs = (await register(client, other, "node-9"))["credential"]
    version_id, _, _ = await _push(client, db, admin)
    job_id = await placed_job(client, admin, db)
    async with db.system_transaction() as conn:
        host_name = await conn.fetchval("select h.name from jobs j join hosts h on h.id = j.host_id where j.id = $1",
                                        uuid.UUID(job_id))  # fmt: skip
    here, elsewhere = (mine, second) if host_name == "node-1" else (second, mine)
    prediction = await _prediction_on(db, admin.org.id, version_id, job_id)

    name = "résultat 1.png"
    headers = {"Content-Type": "image/png", "X-Gpufleet-Filename": quote(name, safe="")}
    params = {"prediction_id": str(prediction)}
    r = await client.post("/v1/agent/files", params=params, content=b"\x89PNG...", headers=bearer(here) | headers)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["url"].endswith(f"/v1/files/{made['id']}/download")
    # Members read it like any file of theirs; it belongs to the prediction.
    meta = (await client.get(f"/v1/files/{made['id']}", headers=admin.headers)).json()
    assert (meta["name"], meta["content_type"], meta["size"]) == (name, "image/png", 7)
    got = await client.get(f"/v1/files/{made['id']}/download", headers=admin.headers)
    assert got.content == b"\x89PNG..."
    async with db.system_transaction() as conn:
        owner = await conn.fetchval("select prediction_id from files where id = $1", uuid.UUID(made["id"]))
    assert owner == prediction
    # Another host of the organization, another organization's host, or no such prediction: 404.
    for credential, pid in ((elsewhere, prediction), (theirs, prediction), (here, uuid.uuid4())):
        r = await client.post(
            "/v1/agent/files", params={"prediction_id": str(pid)}, content=b"x", headers=bearer(credential)
        )
        assert_problem(r, 404)
    # Input files: the organization's hosts read them with their name; nobody else.
    down = await client.get(f"/v1/agent/files/{made['id']}", headers=bearer(elsewhere))
    assert down.status_code == 200 and down.content == b"\x89PNG..."
    assert down.headers["x-gpufleet-filename"] == quote(name, safe="") and down.headers["content-type"] == "image/png"
    assert_problem(await client.get(f"/v1/agent/files/{made['id']}", headers=bearer(theirs)), 404)
    assert_problem(await client.get(f"/v1/agent/files/{made['id']}", headers=admin.headers), 401)
