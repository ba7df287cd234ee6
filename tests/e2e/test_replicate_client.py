"""The official ``replicate`` client (1.0.x), unchanged, against a live gpufleet: the compatibility promise.

A real server, a real agent with simulated GPUs running real model workers, and the client
pointed at the server with ``replicate.Client(api_token=<gfk key>, base_url=<server URL>)``.
The client is synchronous: it runs in a thread, so the agent (on this test's loop) keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import replicate
from replicate.exceptions import ReplicateError

from gpufleet.inference.archive import pack
from tests.e2e.conftest import Cluster, until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


async def push(cluster: Cluster, name: str, **hardware: Any) -> str:
    r = await cluster.api.post("/v1/models", json={"name": name, "gpu_fraction": 0.25, **hardware})
    assert r.status_code == 201, r.text
    slug = cluster.owner.org.slug
    r = await cluster.api.post(
        f"/v1/models/{slug}/{name}/versions",
        content=pack(EXAMPLES / name),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@contextmanager
def client(cluster: Cluster) -> Iterator[replicate.Client]:
    rc = replicate.Client(api_token=cluster.owner.key, base_url=cluster.live.url, timeout=60)
    try:
        yield rc
    finally:
        rc._client.close()  # the client keeps its connections open; close them before the server stops


async def test_models_get_run_and_predictions(cluster: Cluster) -> None:
    await cluster.start_agent()
    slug = cluster.owner.org.slug
    digest = await push(cluster, "echo")
    with client(cluster) as rc:
        model = await asyncio.to_thread(rc.models.get, f"{slug}/echo")
        assert (model.owner, model.name) == (slug, "echo")
        assert model.latest_version is not None and model.latest_version.id == digest
        props = model.latest_version.openapi_schema["components"]["schemas"]["Input"]["properties"]
        assert props["repeat"]["maximum"] == 10

        # run: the model's own deployment, synchronous (Prefer: wait), a cold start the first time.
        out = await asyncio.to_thread(rc.run, f"{slug}/echo", input={"text": "hi", "repeat": 2})
        assert out == "hi hi"
        # run with a pinned version, and without waiting (the client polls).
        out = await asyncio.to_thread(rc.run, f"{slug}/echo:{digest}", input={"text": "yo", "case": "upper"})
        assert out == "YO"
        out = await asyncio.to_thread(lambda: rc.run(f"{slug}/echo", input={"text": "a"}, wait=False))
        assert out == "a"

        # predictions.create / get / wait / list
        p = await asyncio.to_thread(rc.predictions.create, version=digest, input={"text": "abc", "reverse": True})
        assert p.status in ("starting", "processing", "succeeded") and p.version == digest
        await asyncio.to_thread(p.wait)
        assert (p.status, p.output) == ("succeeded", "cba")
        got = await asyncio.to_thread(rc.predictions.get, p.id)
        assert got.output == "cba" and got.metrics is not None and got.metrics["predict_time"] >= 0
        page = await asyncio.to_thread(rc.predictions.list)
        assert p.id in [q.id for q in page.results]

        # A bad input is refused before anything is queued, naming the field.
        try:
            await asyncio.to_thread(rc.predictions.create, version=digest, input={"text": "x", "repeat": 11})
        except ReplicateError as e:
            assert e.status == 422 and "repeat" in str(e), e
        else:
            raise AssertionError("an out-of-range input was accepted")


async def test_stream_cancel_and_deployments(cluster: Cluster) -> None:
    await cluster.start_agent()
    slug = cluster.owner.org.slug
    digest = await push(cluster, "stream-text")
    with client(cluster) as rc:

        def streamed() -> str:
            return "".join(
                str(e) for e in rc.stream(f"{slug}/stream-text", input={"text": "one two three", "delay": 0})
            )

        assert await asyncio.to_thread(streamed) == "one two three"

        # Cancel a long prediction while it runs.
        p = await asyncio.to_thread(rc.predictions.create, version=digest, input={"text": "tick " * 50, "delay": 0.2})
        await until(lambda: _is(rc, p.id, "processing"), what="the prediction to start", deadline_s=60)
        await asyncio.to_thread(p.cancel)
        await until(lambda: _is(rc, p.id, "canceled"), what="the prediction to be canceled", deadline_s=30)

        # A deployment, through the client: deployments.get(...).predictions.create(...)
        r = await cluster.api.post(
            "/v1/deployments",
            json={
                "name": "streamer",
                "model": f"{slug}/stream-text",
                "version": digest,
                "min_instances": 0,
                "max_instances": 1,
            },
        )
        assert r.status_code == 201, r.text
        dep = await asyncio.to_thread(rc.deployments.get, f"{slug}/streamer")
        assert dep.current_release is not None and dep.current_release.version == digest
        p = await asyncio.to_thread(dep.predictions.create, input={"text": "x y", "delay": 0})
        await asyncio.to_thread(p.wait)
        assert p.status == "succeeded" and "".join(p.output) == "x y"

        # A bad input is a 422 from the client, before the model sees it.
        try:
            await asyncio.to_thread(rc.run, f"{slug}/stream-text", input={"text": "x", "delay": -1})
        except ReplicateError as e:
            assert e.status == 422
        else:
            raise AssertionError("a negative delay was accepted")


async def _is(rc: replicate.Client, prediction_id: str, status: str) -> bool:
    p = await asyncio.to_thread(rc.predictions.get, prediction_id)
    return bool(p.status == status)
