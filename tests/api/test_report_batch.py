"""POST /v1/agent/reports: many starts, log uploads and exits in one request, each item answered alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from starlette.responses import PlainTextResponse

from gpufleet.agent.jobs.reporter import Reporter
from gpufleet.agent.server_api import AgentApi
from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.schemas.execution import ExitItemIn, LogChunkWire, LogsItemIn, LogsResultOut, StartedItemIn
from tests.api.agent_helpers import bearer, chunk, placed_job, register
from tests.api.conftest import Tenant, TenantFactory
from tests.api.test_jobs_api import field_of
from tests.api.test_tenancy_api import assert_problem
from tests.execution.helpers import event_types, events, job, snapshot, sql


async def _reports(client: httpx.AsyncClient, credential: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/agent/reports", json=body, headers=bearer(credential))
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


def _started(job_id: str, attempt: int = 1, pid: int = 4242) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "pid": pid}


def _exit(job_id: str, attempt: int = 1, status: str = "succeeded", code: int | None = 0) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "status": status, "exit_code": code, "reason": f"exit {code}"}


def _logs(job_id: str, chunks: list[dict[str, Any]], attempt: int = 1) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "chunks": chunks}


def _results(reply: dict[str, Any], kind: str) -> list[str]:
    return [item["result"] for item in reply[kind]]


async def _counts(db: Database, job_id: str) -> tuple[int, int]:
    async with db.system_transaction() as conn:
        logs = await conn.fetchval("select count(*) from job_logs where job_id = $1", uuid.UUID(job_id))
        attempts = await conn.fetchval("select count(*) from job_attempts where job_id = $1", uuid.UUID(job_id))
    return int(logs), int(attempts)


async def test_a_job_started_logged_and_ended_in_one_batch_and_the_batch_resent(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    batch = {
        "started": [_started(job_id)],
        "logs": [_logs(job_id, [chunk(0, "stdout", 0, b"hello\n"), chunk(1, "stderr", 0, b"warn\n")])],
        "exits": [_exit(job_id)],
    }
    reply = await _reports(client, cred, **batch)
    assert (_results(reply, "started"), _results(reply, "logs"), _results(reply, "exits")) == (
        ["applied"],
        ["applied"],
        ["applied"],
    )
    assert reply["logs"][0]["ack"]["acked_seq"] == 1 and reply["logs"][0]["ack"]["stored_chunks"] == 2
    row = await job(db, uuid.UUID(job_id))
    assert row["status"] == "succeeded" and row["exit_code"] == 0 and row["started_at"] is not None
    assert await event_types(db, uuid.UUID(job_id)) == [
        "job.submitted",
        "job.allocated",
        "job.running",
        "job.succeeded",
    ]
    running = dict(await events(db, uuid.UUID(job_id)))["job.running"]
    assert running["pid"] == 4242 and running["attempt"] == 1 and running["from"] == "allocated"
    async with db.system_transaction() as conn:
        a = await conn.fetchrow("select * from job_attempts where job_id = $1", uuid.UUID(job_id))
        allocations = await conn.fetchval(
            "select count(*) from allocations where job_id = $1 and released_at is null", uuid.UUID(job_id)
        )
    assert a is not None and (a["pid"], a["outcome"], a["reported_by"]) == (4242, "succeeded", "agent")
    assert allocations == 0  # released with the exit, as by the single route
    assert await _counts(db, job_id) == (2, 1)

    before = await snapshot(db)
    again = await _reports(client, cred, **batch)  # its reply was lost
    assert _results(again, "started") == _results(again, "exits") == _results(again, "logs") == ["applied"]
    assert again["logs"][0]["ack"]["duplicate_chunks"] == 2 and again["logs"][0]["ack"]["stored_chunks"] == 0
    assert await snapshot(db) == before


async def test_a_stale_item_is_refused_alone_and_the_others_apply(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t, n=4))["credential"]
    good, other, fenced = [await placed_job(client, t, db) for _ in range(3)]
    # ``fenced`` moved on to attempt 2 (requeued, as after a host loss) and waits to be placed again.
    await sql(db, "update jobs set status = 'pending', attempt = 2, host_id = null where id = $1", uuid.UUID(fenced))
    before = await job(db, uuid.UUID(fenced))
    reply = await _reports(
        client,
        cred,
        started=[_started(good), _started(fenced), _started(other)],
        exits=[_exit(fenced), _exit(good, status="failed", code=3)],
        logs=[_logs(fenced, [chunk(0, "stdout", 0, b"late\n")])],
    )
    assert _results(reply, "started") == ["applied", "stale", "applied"]
    assert _results(reply, "exits") == ["stale", "applied"]
    assert _results(reply, "logs") == ["stale"]
    stale = reply["started"][1]
    assert stale["job_id"] == fenced and stale["attempt"] == 1 and stale["current_attempt"] == 2
    assert "not current on this host" in stale["detail"]
    assert reply["exits"][0]["current_attempt"] == 2 and reply["logs"][0]["current_attempt"] == 2
    assert await job(db, uuid.UUID(fenced)) == before
    assert await _counts(db, fenced) == (0, 0)
    assert (await job(db, uuid.UUID(good)))["status"] == "failed"
    assert (await job(db, uuid.UUID(other)))["status"] == "running"


async def test_an_invalid_item_is_answered_alone_and_names_its_field(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = await placed_job(client, t, db)
    bad_b64 = {"seq": 0, "stream": "stdout", "offset": 0, "data_b64": "not base64!"}
    twice = [chunk(0, "stdout", 0, b"a"), chunk(0, "stdout", 1, b"b")]
    reply = await _reports(
        client,
        cred,
        started=[_started(job_id)],
        logs=[_logs(job_id, [bad_b64]), _logs(job_id, twice), _logs(job_id, [chunk(0, "stdout", 0, b"ok\n")])],
    )
    assert _results(reply, "started") == ["applied"]
    assert _results(reply, "logs") == ["invalid", "invalid", "applied"]
    assert reply["logs"][0]["field"] == "logs[0].chunks[0].data_b64"
    assert reply["logs"][1]["field"] == "logs[1].seq" and "distinct seq" in reply["logs"][1]["detail"]
    assert await _counts(db, job_id) == (1, 1)
    # A body that is not a batch at all is refused whole, naming the field.
    r = await client.post(
        "/v1/agent/reports", json={"started": [{"job_id": job_id, "attempt": 0}]}, headers=bearer(cred)
    )
    assert_problem(r, 422)
    assert field_of(r) == "started.0.attempt"
    r = await client.post("/v1/agent/reports", json={"exits": [_exit(job_id)] * 1001}, headers=bearer(cred))
    assert_problem(r, 422)
    assert field_of(r) == "exits"


async def test_jobs_of_another_host_or_another_organization_are_refused(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    stranger: Tenant = await tenant(Role.ADMIN)
    mine = (await register(client, t, "node-1"))["credential"]
    job_id = await placed_job(client, t, db)
    neighbour = (await register(client, t, "node-2"))["credential"]  # same organization, another host
    foreign = (await register(client, stranger, "node-9"))["credential"]  # another organization
    before = await snapshot(db)
    for cred, why in ((neighbour, "not placed on this host"), (foreign, "no such job")):
        reply = await _reports(
            client,
            cred,
            started=[_started(job_id)],
            logs=[_logs(job_id, [chunk(0, "stdout", 0, b"x")])],
            exits=[_exit(job_id)],
        )
        for kind in ("started", "logs", "exits"):
            assert _results(reply, kind) == ["stale"], reply
            assert why in reply[kind][0]["detail"]
    assert await snapshot(db) == before
    assert _results(await _reports(client, mine, started=[_started(job_id)]), "started") == ["applied"]


async def test_an_empty_batch_is_answered_empty(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    assert await _reports(client, cred) == {"started": [], "exits": [], "logs": []}


# ------------------------------------------------------------------------------ the agent's reporter


class _LosesFirstReply(httpx.AsyncBaseTransport):
    """The real app behind it; the first reply to a batch is lost after the server applied it."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/agent/reports" and not self.lost:
            self.lost += 1
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


async def test_the_agents_reporter_collects_reports_while_one_is_in_flight_and_resends_a_lost_one(
    app: Any, client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t, n=8))["credential"]
    jobs = [await placed_job(client, t, db) for _ in range(8)]
    transport = _LosesFirstReply(app)
    api = AgentApi("http://test", transport=transport)
    halt = asyncio.Event()
    reporter = Reporter(api, cred, backoff=lambda failures, after: 0.01, halt=halt)
    try:
        answers = await asyncio.gather(
            *(reporter.send(StartedItemIn(job_id=uuid.UUID(j), attempt=1, pid=100 + i)) for i, j in enumerate(jobs))
        )
        assert [a.result if a else None for a in answers] == ["applied"] * 8
        assert transport.lost == 1
        assert reporter.requests <= 3  # the first alone (lost, then resent), the others together
        for i, j in enumerate(jobs):
            assert (await job(db, uuid.UUID(j)))["status"] == "running"
            assert [d["pid"] for ty, d in await events(db, uuid.UUID(j)) if ty == "job.running"] == [100 + i]
        # A run's logs, then its exit, in order; a stale report among them answered alone.
        logs = LogsItemIn(job_id=uuid.UUID(jobs[0]), attempt=1, chunks=[LogChunkWire(**chunk(0, "stdout", 0, b"hi\n"))])
        ends = [ExitItemIn(job_id=uuid.UUID(j), attempt=1, status="succeeded", exit_code=0) for j in jobs[:4]]
        stale = ExitItemIn(job_id=uuid.UUID(jobs[5]), attempt=2, status="succeeded", exit_code=0)
        answers = await asyncio.gather(*(reporter.send(x) for x in (logs, *ends, stale)))
        assert [a.result if a else None for a in answers] == ["applied"] * 5 + ["stale"]
        assert [(await job(db, uuid.UUID(j)))["status"] for j in jobs[:6]] == ["succeeded"] * 4 + ["running"] * 2
        assert await _counts(db, jobs[0]) == (1, 1)
    finally:
        halt.set()
        await reporter.close()
        await api.aclose()


_VOLATILE = {"id", "job_id", "entity_id", "host_id", "created_at", "updated_at", "started_at", "finished_at", "seq"}


async def _footprint(db: Database, job_id: str) -> dict[str, Any]:
    """What reports left of a job, without ids and times: its row, events, attempts, allocations, costs."""
    jid = uuid.UUID(job_id)

    def clean(row: Any) -> dict[str, Any]:
        return {k: v for k, v in dict(row).items() if k not in _VOLATILE and not k.endswith("_at")}

    async with db.system_transaction() as conn:
        row = await conn.fetchrow(
            "select status, status_reason, exit_code, exit_signal, attempt, started_at is not null as s,"
            " finished_at is not null as f from jobs where id = $1",
            jid,
        )
        evs = await conn.fetch("select type, data, actor from events where entity_id = $1 order by seq", jid)
        attempts = await conn.fetch("select * from job_attempts where job_id = $1 order by attempt", jid)
        allocations = await conn.fetch(
            "select attempt, released_at is not null as released from allocations where job_id = $1 order by attempt",
            jid,
        )
        costs = await conn.fetchval("select count(*) from cost_tracking where job_id = $1", jid)
    events_out = [
        (e["type"], {k: v for k, v in e["data"].items() if k not in ("host_id", "gpus", "gpu_ids")}, e["actor"])
        for e in evs
    ]
    return {
        "job": dict(row) if row else None,
        "events": events_out,
        "attempts": [clean(a) for a in attempts],
        "allocations": [dict(a) for a in allocations],
        "costs": costs,
    }


async def test_a_batch_leaves_what_the_single_routes_leave(
    client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t, n=8))["credential"]
    cases = [  # (exit status, exit code, spec): plain success, failure without retry, failure retried
        ("succeeded", 0, {}),
        ("failed", 3, {}),
        ("failed", 3, {"retry": {"on_failure": True, "max_attempts": 2}}),
        ("interrupted", None, {}),
    ]
    pairs = [(await placed_job(client, t, db, **spec), await placed_job(client, t, db, **spec)) for *_, spec in cases]
    for (status, code, _), (single, _) in zip(cases, pairs, strict=True):
        r = await client.post(f"/v1/agent/jobs/{single}/started", json={"attempt": 1, "pid": 7}, headers=bearer(cred))
        assert r.status_code == 204, r.text
        body = {"attempt": 1, "status": status, "exit_code": code, "reason": f"exit {code}"}
        r = await client.post(f"/v1/agent/jobs/{single}/exit", json=body, headers=bearer(cred))
        assert r.status_code == 204, r.text
    batched = [b for _, b in pairs]
    reply = await _reports(client, cred, started=[_started(b, pid=7) for b in batched])
    assert _results(reply, "started") == ["applied"] * len(cases)
    reply = await _reports(
        client, cred, exits=[_exit(b, status=s, code=c) for (s, c, _), b in zip(cases, batched, strict=True)]
    )
    assert _results(reply, "exits") == ["applied"] * len(cases)
    for single, batch in pairs:
        assert await _footprint(db, batch) == await _footprint(db, single)
    assert [(await job(db, uuid.UUID(b)))["status"] for b in batched] == ["succeeded", "failed", "pending", "pending"]


async def test_the_agents_reporter_sends_one_request_per_report_to_a_server_without_the_batch_route(
    app: Any, client: httpx.AsyncClient, tenant: TenantFactory, db: Database
) -> None:
    async def older_server(scope: Any, receive: Any, send: Any) -> None:  # the same app, less the batch route
        if scope["type"] == "http" and scope["path"] == "/v1/agent/reports":
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    t: Tenant = await tenant(Role.ADMIN)
    cred = (await register(client, t))["credential"]
    job_id = uuid.UUID(await placed_job(client, t, db))
    api = AgentApi("http://test", transport=httpx.ASGITransport(app=older_server))
    halt = asyncio.Event()
    reporter = Reporter(api, cred, backoff=lambda failures, after: 0.01, halt=halt)
    try:
        hi = LogChunkWire(**chunk(0, "stdout", 0, b"hi\n"))
        answers = await asyncio.gather(
            reporter.send(StartedItemIn(job_id=job_id, attempt=1, pid=9)),
            reporter.send(LogsItemIn(job_id=job_id, attempt=1, chunks=[hi])),
            reporter.send(ExitItemIn(job_id=job_id, attempt=2, status="succeeded", exit_code=0)),
            reporter.send(ExitItemIn(job_id=job_id, attempt=1, status="succeeded", exit_code=0)),
        )
        assert [a.result if a else None for a in answers] == ["applied", "applied", "stale", "applied"]
        assert isinstance(answers[1], LogsResultOut) and answers[1].ack and answers[1].ack.stored_chunks == 1
        assert answers[2] is not None and answers[2].current_attempt == 1
        assert not reporter.batched and reporter.requests == 5  # the refused batch, then one per report
        assert (await job(db, job_id))["status"] == "succeeded"
    finally:
        halt.set()
        await reporter.close()
        await api.aclose()
