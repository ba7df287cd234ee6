"""Job logs end to end against a real server: agent uploads in, exact bytes out as JSON pages,
Server-Sent Events (resumable), the SDK (reconnecting) and `gpufleet jobs logs [-f]`."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gpufleet.api.routes import job_logs
from gpufleet.cli.main import app as cli_app
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from gpufleet.schemas.execution import LogEntryOut
from gpufleet.sdk import ApiError, Client
from gpufleet.sdk import sse as sdk_sse
from tests.api.agent_helpers import chunk, exited, placed_job, register, started, upload
from tests.api.conftest import Tenant, make_tenant
from tests.api.test_tenancy_api import assert_problem
from tests.liveserver import LiveServer
from tests.pg import PgServer
from tests.scheduling.helpers import scheduler

UPLOAD = 512 * 1024  # raw bytes per upload, what the agent sends at most


@pytest.fixture
async def owner(db: Database) -> Tenant:
    return await make_tenant(db, Role.ADMIN)


@pytest.fixture
def live(pg_server: PgServer, db_name: str, owner: Tenant) -> Iterator[LiveServer]:
    server = LiveServer(
        pg_server.dsn(db_name),
        pg_server.dsn(db_name, user=RUNTIME_ROLE),
        settings={"rate_limit_key_per_minute": 0, "rate_limit_ip_per_minute": 0},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def running_job(http: httpx.AsyncClient, t: Tenant, db: Database, **spec: Any) -> tuple[str, str]:
    """(credential, job id) of a job started on a freshly registered host."""
    cred = (await register(http, t))["credential"]
    job_id = await placed_job(http, t, db, **spec)
    assert (await started(http, cred, job_id)).status_code == 204
    return cred, job_id


def output() -> tuple[bytes, bytes]:
    """4 MiB of stdout and 512 KiB of stderr: every byte value, invalid UTF-8 included."""
    rng = random.Random(7)
    odd = bytes(range(256)) + "\u2028\u2029\x85\r\n\r".encode()  # line breaks of str.splitlines, not of SSE
    return odd + rng.randbytes(4 * 1024 * 1024 - len(odd)), b"\xff\xfe" + rng.randbytes(512 * 1024 - 2)


async def upload_all(http: httpx.AsyncClient, cred: str, job_id: str, out: bytes, err: bytes, attempt: int = 1) -> None:
    seq = 0
    step = len(err) * UPLOAD // len(out)
    for i in range(0, len(out), UPLOAD):
        j = i * len(err) // len(out)
        parts = [chunk(seq, "stdout", i, out[i : i + UPLOAD]), chunk(seq + 1, "stderr", j, err[j : j + step])]
        seq += 2
        r = await upload(http, cred, job_id, parts, attempt)
        assert r.status_code == 200 and not r.json()["truncated"], r.text


async def sse(
    http: httpx.AsyncClient,
    t: Tenant,
    job_id: str,
    headers: dict[str, str] | None = None,
    opened: asyncio.Event | None = None,
    **params: Any,
) -> AsyncIterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event of the stream, comments as ("comment", text, None)."""
    url = f"/v1/jobs/{job_id}/logs/stream"
    async with http.stream("GET", url, params=params, headers={**t.headers, **(headers or {})}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()
        event, data, eid = "message", [], None
        async for line in r.aiter_lines():
            if line.startswith(":"):
                yield "comment", line[1:].strip(), None
            elif not line:
                if data:
                    yield event, "\n".join(data), eid
                event, data, eid = "message", [], None
            else:
                name, _, value = line.partition(": ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    eid = value


async def collect(events: AsyncIterator[tuple[str, str, str | None]]) -> tuple[list[dict[str, Any]], list[str], Any]:
    """The log entries, their ids, and the end event's data."""
    entries, ids = [], []
    async for event, data, eid in events:
        if event == "log":
            entries.append(json.loads(data))
            ids.append(eid or "")
        elif event == "end":
            return entries, ids, json.loads(data)
    raise AssertionError("the stream closed without its end event")


def joined(entries: Sequence[dict[str, Any] | LogEntryOut], stream: str) -> bytes:
    rows = [e if isinstance(e, dict) else e.model_dump() for e in entries]
    return b"".join(base64.b64decode(r["data_b64"]) for r in rows if r["stream"] == stream)


async def test_binary_logs_round_trip_exactly_as_pages_and_live_events(
    http: httpx.AsyncClient, owner: Tenant, db: Database
) -> None:
    cred, job_id = await running_job(http, owner, db)
    out, err = output()
    opened = asyncio.Event()
    follower = asyncio.create_task(collect(sse(http, owner, job_id, opened=opened)))
    await asyncio.wait_for(opened.wait(), 10)
    await upload_all(http, cred, job_id, out, err)
    assert not follower.done()  # running: the stream stays open
    assert (await exited(http, cred, job_id)).status_code == 204
    entries, ids, end = await asyncio.wait_for(follower, 30)
    assert end == {"job_status": "succeeded"}
    assert joined(entries, "stdout") == out and joined(entries, "stderr") == err
    assert ids == [f"1:{e['seq']}" for e in entries] and [e["seq"] for e in entries] == list(range(len(entries)))
    assert entries[1]["stream"] == "stderr" and entries[1]["text"].startswith("\ufffd")

    # The same through JSON pages.
    pages: list[dict[str, Any]] = []
    after = -1
    while True:
        r = await http.get(f"/v1/jobs/{job_id}/logs", params={"after_seq": after}, headers=owner.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        after = page["last_seq"]
        if page["complete"]:
            break
    assert len(pages) >= 4  # 1 MiB pages by default
    chunks = [c for p in pages for c in p["chunks"]]
    assert joined(chunks, "stdout") == out and joined(chunks, "stderr") == err
    assert (pages[-1]["job_status"], pages[-1]["attempt"], pages[-1]["current_attempt"]) == ("succeeded", 1, 1)

    # Resuming with Last-Event-ID (ATTEMPT:SEQ, or a bare SEQ) sends only what came after.
    for last in ("1:3", "3"):
        rest, _, end = await collect(sse(http, owner, job_id, {"Last-Event-ID": last}))
        assert [e["seq"] for e in rest] == list(range(4, len(entries))) and end == {"job_status": "succeeded"}


async def test_following_goes_on_across_a_retry(http: httpx.AsyncClient, owner: Tenant, db: Database) -> None:
    cred, job_id = await running_job(http, owner, db, retry={"on_failure": True, "max_attempts": 2})
    opened = asyncio.Event()
    follower = asyncio.create_task(collect(sse(http, owner, job_id, opened=opened)))
    await asyncio.wait_for(opened.wait(), 10)  # it starts at attempt 1, whatever happens next
    assert (await upload(http, cred, job_id, [chunk(0, "stdout", 0, b"first try\n")])).status_code == 200
    assert (await exited(http, cred, job_id, status="failed", exit_code=1)).status_code == 204
    await scheduler(db).run_once()
    assert (await started(http, cred, job_id, attempt=2)).status_code == 204
    assert (await upload(http, cred, job_id, [chunk(0, "stdout", 0, b"second try\n")], attempt=2)).status_code == 200
    assert (await exited(http, cred, job_id, attempt=2)).status_code == 204
    entries, ids, end = await asyncio.wait_for(follower, 30)
    assert [(e["attempt"], e["text"]) for e in entries] == [(1, "first try\n"), (2, "second try\n")]
    assert ids == ["1:0", "2:0"] and end == {"job_status": "succeeded"}
    # Resuming after attempt 1's last chunk goes on with attempt 2.
    rest, _, _ = await collect(sse(http, owner, job_id, {"Last-Event-ID": "1:0"}))
    assert [(e["attempt"], e["text"]) for e in rest] == [(2, "second try\n")]
    # One attempt only, on request.
    first, _, _ = await collect(sse(http, owner, job_id, attempt=1))
    assert [e["text"] for e in first] == ["first try\n"]
    page = (await http.get(f"/v1/jobs/{job_id}/logs", params={"attempt": 1}, headers=owner.headers)).json()
    assert [c["text"] for c in page["chunks"]] == ["first try\n"] and page["complete"] and page["current_attempt"] == 2


async def test_refusals_come_before_the_stream_starts(
    http: httpx.AsyncClient, live: LiveServer, owner: Tenant, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await make_tenant(db, Role.OWNER)
    _, job_id = await running_job(http, owner, db)
    url = f"/v1/jobs/{job_id}/logs/stream"
    for r in (
        await http.get(url, headers=other.headers),
        await http.get(f"/v1/jobs/{job_id}/logs", headers=other.headers),
        await http.get(url, params={"attempt": 2}, headers=owner.headers),
        await http.get(url, headers={**owner.headers, "Last-Event-ID": "5:0"}),
    ):
        assert_problem(r, 404)
    for bad in ("x", "1:y", "0:1", "1:-5"):
        r = await http.get(url, headers={**owner.headers, "Last-Event-ID": bad})
        assert_problem(r, 422, "Last-Event-ID")
    assert_problem(await http.get(url, params={"after_seq": -2}, headers=owner.headers), 422)
    # A quiet stream gets keep-alive comments; a client gone is noticed at the next one at the latest.
    monkeypatch.setattr(job_logs, "KEEPALIVE_S", 0.1)
    events = sse(http, owner, job_id)
    assert await asyncio.wait_for(anext(events), 5) == ("comment", "keep-alive", None)
    hub = live.app.state.gpufleet.hub
    assert hub.waiting == 1
    await events.aclose()
    for _ in range(100):  # the server's writes run in its own thread and loop
        if not hub.waiting:
            break
        await asyncio.sleep(0.05)
    assert hub.waiting == 0


class _Dropping(httpx.BaseTransport):
    """Cuts the first log stream after a few events, as a flaky network would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.drops = 1
        self.last_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/logs/stream"):
            self.last_ids.append(request.headers.get("last-event-id"))
            if self.drops:
                self.drops -= 1
                stream = _Cut(response.stream)  # type: ignore[arg-type]
                return httpx.Response(response.status_code, headers=response.headers, stream=stream)
        return response

    def close(self) -> None:
        self.inner.close()


class _Cut(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, events: int = 4) -> None:
        self.inner, self.events = inner, events

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for part in self.inner:
            yield part
            seen += part.count(b"\n\n")
            if seen > self.events:
                raise httpx.RemoteProtocolError("peer closed connection")

    def close(self) -> None:
        self.inner.close()


async def test_the_sdk_reads_pages_and_follows_through_a_dropped_connection(
    http: httpx.AsyncClient, live: LiveServer, owner: Tenant, db: Database
) -> None:
    cred, job_id = await running_job(http, owner, db)
    out, err = output()
    await upload_all(http, cred, job_id, out, err)

    def follow() -> tuple[list[Any], list[str | None]]:
        transport = _Dropping()
        with Client(live.url, owner.key, transport=transport) as c:
            return list(c.follow_job_logs(job_id, backoff_s=0.01)), transport.last_ids

    following = asyncio.create_task(asyncio.to_thread(follow))
    await asyncio.sleep(0.3)
    assert (await exited(http, cred, job_id)).status_code == 204
    entries, last_ids = await asyncio.wait_for(following, 30)
    assert joined(entries, "stdout") == out and joined(entries, "stderr") == err
    assert last_ids[0] is None and last_ids[1] is not None and last_ids[1].startswith("1:")

    def read() -> list[Any]:
        with Client(live.url, owner.key) as c:
            page = c.job_logs(job_id, after_seq=5, limit_bytes=10)
            assert [e.seq for e in page.chunks] == [6] and not page.complete
            with pytest.raises(ApiError) as exc:
                c.job_logs(job_id, attempt=3)
            assert exc.value.status == 404
            return list(c.iter_job_logs(job_id))

    listed = await asyncio.to_thread(read)
    assert joined(listed, "stdout") == out and joined(listed, "stderr") == err


def _cli(live: LiveServer, t: Tenant, tmp_path: Path, *args: str) -> tuple[int, bytes, bytes]:
    env = {"GPUFLEET_URL": live.url, "GPUFLEET_API_KEY": t.key, "GPUFLEET_CONFIG_DIR": str(tmp_path / "cfg")}
    result = CliRunner().invoke(cli_app, list(args), env=env)
    return result.exit_code, result.stdout_bytes, result.stderr_bytes


async def test_cli_prints_logs_byte_for_byte_and_follows(
    http: httpx.AsyncClient, live: LiveServer, owner: Tenant, db: Database, tmp_path: Path
) -> None:
    cred, job_id = await running_job(http, owner, db)
    binary = bytes(range(256))
    parts = [chunk(0, "stdout", 0, b"hello\n"), chunk(1, "stderr", 0, b"warning\n"), chunk(2, "stdout", 6, binary)]
    assert (await upload(http, cred, job_id, parts)).status_code == 200
    code, out, err = await asyncio.to_thread(_cli, live, owner, tmp_path, "jobs", "logs", job_id)
    assert (code, out, err) == (0, b"hello\n" + binary, b"warning\n")
    code, out, err = await asyncio.to_thread(_cli, live, owner, tmp_path, "jobs", "logs", job_id, "--stream", "stderr")
    assert (code, out, err) == (0, b"", b"warning\n")

    done = threading.Event()

    def follow() -> tuple[int, bytes, bytes]:
        try:
            return _cli(live, owner, tmp_path, "jobs", "logs", "-f", job_id)
        finally:
            done.set()

    following = asyncio.create_task(asyncio.to_thread(follow))
    await asyncio.sleep(0.5)
    assert not done.is_set()  # still running: -f waits for more
    assert (await upload(http, cred, job_id, [chunk(3, "stdout", 262, b"bye\n")])).status_code == 200
    assert (await exited(http, cred, job_id)).status_code == 204
    code, out, err = await asyncio.wait_for(following, 30)
    assert (code, out, err) == (0, b"hello\n" + binary + b"bye\n", b"warning\n")
    code, _, err = await asyncio.to_thread(_cli, live, owner, tmp_path, "jobs", "logs", "-f", "--attempt", "2", job_id)
    assert code == 1 and b"404" in err


def test_sdk_events_end_lines_only_at_cr_lf_or_crlf() -> None:
    texts = ["id: 1:0\r", "\nevent: log\rdata: a\u2028b\x85c", "\n", "\r\n: keep-alive\n\nda", "ta: x\n\n"]
    got = [(e.event, e.data, e.id) for e in sdk_sse.events(texts)]
    assert got == [("log", "a\u2028b\x85c", "1:0"), ("message", "x", None)]


async def test_sdk_async_events_read_the_same() -> None:
    texts = ["event: output\nid: 1:0\ndata: a\u2028b\r", "\n\r\n: keepalive\n\n", "event: done\ndata: {}\n\n"]

    async def chunks() -> AsyncIterator[str]:
        for t in texts:
            yield t

    got = [(e.event, e.data, e.id) async for e in sdk_sse.aevents(chunks())]
    assert got == [("output", "a\u2028b", "1:0"), ("done", "{}", None)]
