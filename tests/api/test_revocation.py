"""Revocation across replicas: two app instances on one database, each with its own credential
caches. A revoked or superseded host credential is refused at once on every agent route by
every replica (each call checks it again in its own transaction); an API key at once by the
replica that revoked it and within ``auth_cache_ttl_s`` (2 s) by every other."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from tests.api.agent_helpers import (
    bearer,
    chunk,
    exited,
    facts,
    gpus,
    heartbeat,
    join_token,
    placed_job,
    register,
    started,
    upload,
)
from tests.api.conftest import Tenant, TenantFactory, build_app
from tests.api.test_tenancy_api import assert_problem

TTL_S = 2.0  # the documented bound, and the default of auth_cache_ttl_s


@asynccontextmanager
async def two_replicas(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = build_app(db), build_app(db)
    async with a.router.lifespan_context(a), b.router.lifespan_context(b):
        ca = httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://a")
        cb = httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://b")
        async with ca, cb:
            yield ca, cb


async def _status(db: Database, job_id: str) -> str:
    async with db.system_transaction() as conn:
        status: str = await conn.fetchval("select status from jobs where id = $1", uuid.UUID(job_id))
    return status


def _agent_calls(c: httpx.AsyncClient, cred: str, job_id: str) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
    """Every agent route, called as an agent holding ``cred`` would."""
    return {
        "assignments": lambda: c.get("/v1/agent/assignments", headers=bearer(cred)),
        "started": lambda: started(c, cred, job_id),
        "logs": lambda: upload(c, cred, job_id, [chunk(0, "stdout", 0, b"hello\n")]),
        "exit": lambda: exited(c, cred, job_id),
        "reports": lambda: c.post(
            "/v1/agent/reports",
            json={"started": [{"job_id": job_id, "attempt": 1, "pid": 4242}]},
            headers=bearer(cred),
        ),
        "reconcile": lambda: c.post("/v1/agent/reconcile", json={"jobs": []}, headers=bearer(cred)),
        "heartbeat": lambda: heartbeat(c, cred),
        # The Model Runner's routes (docs/agent.md): ids that need not exist, refused before any lookup.
        "archive": lambda: c.get(f"/v1/agent/model-versions/{uuid.uuid4()}/archive", headers=bearer(cred)),
        "state": lambda: c.post(
            f"/v1/agent/replicas/{uuid.uuid4()}/state",
            json={"job_id": job_id, "attempt": 1, "state": "ready"},
            headers=bearer(cred),
        ),
        "claim": lambda: c.post(
            "/v1/agent/predictions/claim", json={"wait_s": 0, "replicas": []}, headers=bearer(cred)
        ),
        "events": lambda: c.post("/v1/agent/predictions/events", json={"events": []}, headers=bearer(cred)),
        "files": lambda: c.post(
            "/v1/agent/files", params={"prediction_id": str(uuid.uuid4())}, content=b"x", headers=bearer(cred)
        ),
        "{file_id}": lambda: c.get(f"/v1/agent/files/{uuid.uuid4()}", headers=bearer(cred)),
    }


async def _refused_everywhere(c: httpx.AsyncClient, cred: str, job_id: str) -> None:
    for name, call in _agent_calls(c, cred, job_id).items():
        r = await call()
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert_problem(r, 401)


async def _seconds_until_refused(call: Callable[[], Awaitable[httpx.Response]], since: float) -> float:
    while time.monotonic() - since < 10:
        r = await call()
        if r.status_code == 401:
            return time.monotonic() - since
        assert r.status_code < 300, r.text
    raise AssertionError("still accepted after 10 s")


async def test_a_revoked_host_credential_is_refused_on_every_agent_route(db: Database, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    async with two_replicas(db) as (a, b):
        reg = await register(a, admin)
        cred = reg["credential"]
        job_id = await placed_job(a, admin, db, env={"TOKEN": "s3cret"})
        # Both replicas have verified (and may remember) the credential.
        for c in (a, b):
            found = (await c.get("/v1/agent/assignments", headers=bearer(cred))).json()["assignments"]
            assert [x["job_id"] for x in found] == [job_id]
        assert (await upload(b, cred, job_id, [chunk(0, "stdout", 0, b"hi\n")])).status_code == 200
        warmed_at = time.monotonic()

        r = await a.post(f"/v1/hosts/{reg['host_id']}/revoke", headers=admin.headers)
        assert r.status_code == 200, r.text
        # The replica that revoked: refused at once, on every route.
        await _refused_everywhere(a, cred, job_id)
        # Another replica, which verified the credential a moment ago: refused at once too.
        await _refused_everywhere(b, cred, job_id)
        assert time.monotonic() - warmed_at < TTL_S  # so no cache entry had expired meanwhile
        assert await _status(db, job_id) == "allocated"  # nothing the old credential sent took effect


async def test_a_superseded_credential_cannot_reconcile_after_re_registration(
    db: Database, tenant: TenantFactory
) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    async with two_replicas(db) as (a, b):
        reg = await register(a, admin)
        old = reg["credential"]
        job_id = await placed_job(a, admin, db)
        assert (await started(a, old, job_id)).status_code == 204
        assert (await b.get("/v1/agent/assignments", headers=bearer(old))).status_code == 200  # b remembers it
        assert (await a.post(f"/v1/hosts/{reg['host_id']}/revoke", headers=admin.headers)).status_code == 200
        # The host registers again (same name, same id) through the other replica: a new credential.
        token = await join_token(b, admin)
        body = {"name": "node-1", "facts": facts("node-1"), "gpus": gpus("node-1", 2)}
        r = await b.post("/v1/agent/register", json=body, headers=bearer(token))
        assert r.status_code == 201, r.text
        new = r.json()["credential"]
        assert r.json()["host_id"] == reg["host_id"] and new != old
        # The old credential's reconcile ("I run nothing") would requeue the running job: refused on
        # both replicas, and the job keeps running.
        for c in (a, b):
            r = await c.post("/v1/agent/reconcile", json={"jobs": []}, headers=bearer(old))
            assert_problem(r, 401)
        assert await _status(db, job_id) == "running"
        # The new credential works on both.
        for c in (a, b):
            assert (await c.get("/v1/agent/assignments", headers=bearer(new))).status_code == 200


async def test_a_revoked_api_key_is_refused_within_the_bound_on_another_replica(
    db: Database, tenant: TenantFactory
) -> None:
    owner: Tenant = await tenant(Role.OWNER)
    async with two_replicas(db) as (a, b):
        created = (await a.post("/v1/api-keys", json={"name": "ci"}, headers=owner.headers)).json()
        h = {"Authorization": f"Bearer {created['secret']}"}
        assert (await a.get("/v1/me", headers=h)).status_code == 200
        assert (await b.get("/v1/me", headers=h)).status_code == 200
        warmed_at = time.monotonic()
        assert (await a.delete(f"/v1/api-keys/{created['id']}", headers=owner.headers)).status_code == 200
        revoked_at = time.monotonic()
        assert_problem(await a.get("/v1/me", headers=h), 401, "revoked")
        waited = await _seconds_until_refused(lambda: b.get("/v1/me", headers=h), revoked_at)
        assert revoked_at - warmed_at + waited <= TTL_S + 0.3, waited


def test_the_revocation_tests_call_every_agent_route(app: FastAPI) -> None:
    """A new agent route must join ``_agent_calls`` (and check ``ensure_current`` in its transaction)."""
    paths = app.openapi()["paths"]
    routes = {p.rsplit("/", 1)[-1] for p in paths if p.startswith("/v1/agent/") and p != "/v1/agent/register"}
    assert routes == set(_agent_calls(httpx.AsyncClient(), "gfh_x", "j"))
