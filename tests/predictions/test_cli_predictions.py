"""`gpufleet predict`, `predictions ...` and `deployments ...` against a live server, with an agent
serving the predictions over HTTP meanwhile; and the SDK's stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from gpufleet.db.pool import Database
from gpufleet.sdk import AsyncClient
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer
from tests.predictions.helpers import Agent, agent, done, push
from tests.test_cli_jobs import Cli, _runner


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return _runner(live.url, owner.key, tmp_path, monkeypatch)


async def serve(node: Agent, a: dict[str, object], n: int = 1, *, fail: bool = False) -> None:
    rid = a["replica"]["replica_id"]  # type: ignore[index]
    for _ in range(n):
        (c,) = (await node.claim([a], wait_s=10))["predictions"]  # type: ignore[list-item]
        inp = c["input"]
        if fail:
            await node.events(done(c["id"], rid, status="failed", error="bad luck"))
        else:
            await node.events(done(c["id"], rid, output=" ".join([inp["text"]] * inp["repeat"])))


async def test_predict_prints_the_output_and_exits_by_its_status(
    cli: Cli, live: LiveServer, db: Database, owner: Tenant
) -> None:
    await push(db, owner)
    ref = f"{owner.org.slug}/echo"
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        node = await agent(http, db, owner)
        code, out, err = await asyncio.to_thread(cli, "predict", ref, "-i", "text=warm", "--no-wait", "--json")
        assert code == 0 and json.loads(out)["status"] == "starting"
        (a,) = await node.start_replicas()
        await serve(node, a)

        server = asyncio.create_task(serve(node, a))
        code, out, err = await asyncio.to_thread(cli, "predict", ref, "-i", "text=hi", "-i", "repeat=2")
        await server
        assert (code, out, err) == (0, "hi hi\n", "")

        code, _, err = await asyncio.to_thread(cli, "predict", ref, "-i", "repeat=many")
        assert code == 2 and "repeat must be a whole number" in err
        code, _, err = await asyncio.to_thread(cli, "predict", ref, "-i", "text=x", "-i", "repeat=11")
        assert code == 1 and "input.repeat" in err

        server = asyncio.create_task(serve(node, a, fail=True))
        code, out, err = await asyncio.to_thread(cli, "predict", ref, "-i", "text=no")
        await server
        assert code == 3 and "failed: bad luck" in err

        code, out, _ = await asyncio.to_thread(cli, "predictions", "list", "--json")
        rows = json.loads(out)
        assert [r["status"] for r in rows] == ["failed", "succeeded", "succeeded"]
        code, out, _ = await asyncio.to_thread(cli, "predictions", "show", rows[1]["id"][:8])
        assert (code == 0 and "hi hi" in out and "predict_time" not in out) or "metrics" in out
        queued = (
            await http.post(f"/v1/models/{ref}/predictions", json={"input": {"text": "q"}}, headers=owner.headers)
        ).json()
        code, out, _ = await asyncio.to_thread(cli, "predictions", "cancel", queued["id"])
        assert code == 0 and "canceled" in out


async def test_deployments_commands_and_the_sdk_stream(cli: Cli, live: LiveServer, db: Database, owner: Tenant) -> None:
    v = await push(db, owner)
    slug = owner.org.slug
    code, out, err = await asyncio.to_thread(
        cli, "deployments", "create", f"{slug}/web", "--model", f"{slug}/echo", "--hardware", "0.5 GPU", "--max", "2"
    )
    assert code == 0, err
    assert f"deployment {slug}/web created: release 1" in out and "0.5 GPU, 0-2 replicas" in out
    code, out, _ = await asyncio.to_thread(cli, "deployments", "update", f"{slug}/web", "--min", "1")
    assert code == 0 and "1-2 replicas" in out and "release 1" in out
    code, out, _ = await asyncio.to_thread(cli, "deployments", "list")
    assert code == 0 and f"{slug}/web" in out and v.digest[:12] in out
    code, out, _ = await asyncio.to_thread(cli, "deployments", "show", f"{slug}/web", "--json")
    assert json.loads(out)["current_release"]["configuration"]["min_instances"] == 1
    code, _, err = await asyncio.to_thread(cli, "deployments", "update", f"{slug}/web")
    assert code == 2 and "nothing to change" in err

    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http, AsyncClient(live.url, owner.key) as sdk:
        node = await agent(http, db, owner)
        p = await sdk.create_prediction(deployment=f"{slug}/web", input={"text": "s", "repeat": 3}, stream=True)
        (a,) = await node.start_replicas()
        rid = a["replica"]["replica_id"]
        (c,) = (await node.claim([a]))["predictions"]
        await node.events(
            {"prediction_id": c["id"], "replica_id": rid, "type": "logs", "text": "go\n"},
            done(c["id"], rid, output="s s s"),
        )
        events = [(e.event, e.data) async for e in sdk.stream_prediction(p)]
        assert events == [("logs", "go"), ("output", "s s s"), ("done", "{}")]
        got = await sdk.get_prediction(p.id)
        assert got.deployment == f"{slug}/web" and got.status == "succeeded"
    code, out, _ = await asyncio.to_thread(cli, "deployments", "delete", f"{slug}/web", "--yes")
    assert code == 0 and "deleted" in out
