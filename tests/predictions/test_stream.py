"""A real server over a loopback port: the SSE stream (order, ids, resuming) and Replicate's own
Python client (create, get, list, cancel, run, stream), with the agent driven over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import replicate

from gpufleet.db.pool import Database
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer
from tests.predictions.helpers import Agent, agent, done, generator_dir, push


async def read_events(response: httpx.Response) -> list[tuple[str, str, str]]:
    """(event, id, data) of every event until `done`."""
    out: list[tuple[str, str, str]] = []
    event, ident, data = "", "", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if event:
                out.append((event, ident, "\n".join(data)))
                if event == "done":
                    return out
            event, ident, data = "", "", []
            continue
        key, _, value = line.partition(": ")
        if key == "event":
            event = value
        elif key == "id":
            ident = value
        elif key == "data":
            data.append(value)
    return out


async def ready_node(http: httpx.AsyncClient, db: Database, owner: Tenant, model: str) -> tuple[Agent, dict[str, Any]]:
    node = await agent(http, db, owner)
    warm = await http.post(
        f"/v1/models/{owner.org.slug}/{model}/predictions", json={"input": {}}, headers=owner.headers
    )
    assert warm.status_code == 201, warm.text
    (a,) = await node.start_replicas()
    (c,) = (await node.claim([a]))["predictions"]
    await node.events(done(c["id"], a["replica"]["replica_id"], output=[]))
    return node, a


async def test_the_stream_sends_logs_outputs_and_done_in_order_and_resumes(
    live: LiveServer, db: Database, owner: Tenant, tmp_path: Path
) -> None:
    await push(db, owner, "words", generator_dir(tmp_path))
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        node, a = await ready_node(http, db, owner, "words")
        rid = a["replica"]["replica_id"]
        r = await http.post(
            f"/v1/models/{owner.org.slug}/words/predictions",
            json={"input": {"prompt": "x y"}, "stream": True},
            headers=owner.headers,
        )
        p = r.json()
        assert p["urls"]["stream"] == f"{live.url}/v1/predictions/{p['id']}/stream"

        async def work() -> None:
            (c,) = (await node.claim([a], wait_s=5))["predictions"]
            assert c["stream"] is True
            await asyncio.sleep(0.2)  # the stream is open and waiting
            await node.events(
                {"prediction_id": c["id"], "replica_id": rid, "type": "logs", "text": "one\ntw"},
                {"prediction_id": c["id"], "replica_id": rid, "type": "output", "item": "x"},
            )
            await asyncio.sleep(0.2)
            await node.events(
                {"prediction_id": c["id"], "replica_id": rid, "type": "logs", "text": "o\n"},
                {"prediction_id": c["id"], "replica_id": rid, "type": "output", "item": {"n": 2}},
                done(c["id"], rid, predict_time=0.3),
            )

        worker = asyncio.create_task(work())
        async with http.stream(
            "GET", p["urls"]["stream"], headers={**owner.headers, "Accept": "text/event-stream"}
        ) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = await read_events(s)
        await worker
        assert events == [
            ("logs", "0:4", "one"),
            ("output", "1:4", "x"),
            ("logs", "1:8", "two"),
            ("output", "2:8", '{"n":2}'),
            ("done", "2:8", "{}"),
        ]
        final = (await http.get(f"/v1/predictions/{p['id']}", headers=owner.headers)).json()
        assert final["output"] == ["x", {"n": 2}] and final["logs"] == "one\ntwo\n"
        async with http.stream("GET", p["urls"]["stream"], headers={**owner.headers, "Last-Event-ID": "1:4"}) as s:
            assert [e[0] for e in await read_events(s)] == ["logs", "output", "done"]


async def test_a_failed_prediction_streams_an_error_then_done(
    live: LiveServer, db: Database, owner: Tenant, tmp_path: Path
) -> None:
    await push(db, owner, "words", generator_dir(tmp_path))
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        node, a = await ready_node(http, db, owner, "words")
        p = (
            await http.post(
                f"/v1/models/{owner.org.slug}/words/predictions",
                json={"input": {}, "stream": True},
                headers=owner.headers,
            )
        ).json()
        (c,) = (await node.claim([a]))["predictions"]
        await node.events(done(c["id"], a["replica"]["replica_id"], status="failed", error="boom"))
        async with http.stream("GET", p["urls"]["stream"], headers=owner.headers) as s:
            events = await read_events(s)
        assert [(e, d) for e, _, d in events] == [("error", '{"detail": "boom"}'), ("done", '{"reason": "error"}')]


async def test_replicates_client_works_unchanged(live: LiveServer, db: Database, owner: Tenant) -> None:
    v = await push(db, owner)
    client = replicate.Client(api_token=owner.key, base_url=live.url)
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        node = await agent(http, db, owner)
        created = await client.predictions.async_create(version=v.digest, input={"text": "hello"})
        assert created.status == "starting" and created.version == v.digest
        (a,) = await node.start_replicas()
        rid = a["replica"]["replica_id"]
        (c,) = (await node.claim([a]))["predictions"]
        await node.events(done(c["id"], rid, output="hello", predict_time=0.01))
        got = await client.predictions.async_get(created.id)
        assert (got.status, got.output, got.metrics["predict_time"]) == ("succeeded", "hello", 0.01)

        async def serve(n: int) -> None:
            for _ in range(n):
                (c,) = (await node.claim([a], wait_s=10))["predictions"]
                await node.events(done(c["id"], rid, output=c["input"]["text"][::-1]))

        server = asyncio.create_task(serve(2))
        assert await client.async_run(f"{owner.org.slug}/echo", input={"text": "abc"}) == "cba"
        deployment = await client.deployments.async_get(f"{owner.org.slug}/model.echo")
        assert deployment.current_release is not None and deployment.current_release.version == v.digest
        pred = await deployment.predictions.async_create(input={"text": "xyz"}, wait=10)
        await server
        await pred.async_reload()
        assert pred.output == "zyx"
        page = await client.predictions.async_list()
        assert page.results[0].id == pred.id and page.next is None
        queued = await client.predictions.async_create(version=v.digest, input={"text": "never"})
        await client.predictions.async_cancel(queued.id)
        assert (await client.predictions.async_get(queued.id)).status == "canceled"

        server = asyncio.create_task(serve(1))
        stream = await client.async_stream(f"{owner.org.slug}/echo", input={"text": "stream"})
        chunks = [str(e) async for e in stream]
        await server
        assert chunks == ["maerts", ""]  # the output, then `done` (which reads as "")
