"""`gpufleet demo`: the sketch's example jobs run as real processes and the dashboard sees them finish."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from gpufleet.cli.demo import demo_jobs
from gpufleet.cli.demo_predictions import DEMO_MODELS
from gpufleet.cli.main import app
from tests.e2e.conftest import Cluster


def test_the_demo_includes_the_sketch_configuration_as_written() -> None:
    first = demo_jobs()[0]
    assert first.name == "Text Generation" and first.model_type == "text"
    assert first.gpu_requirements is not None
    assert (first.gpu_requirements.min_memory, first.gpu_requirements.gpu_type) == (8, "NVIDIA A100")


async def test_demo_runs_every_job_to_success(cluster: Cluster) -> None:
    await cluster.start_agent()
    env = {"GPUFLEET_URL": cluster.live.url, "GPUFLEET_API_KEY": cluster.owner.key}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["demo", "--json", "--timeout", "90"], env=env)
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout[result.stdout.index("[") :])
    assert [j["status"] for j in jobs] == ["succeeded"] * len(demo_jobs())
    assert all(j["cost"] is not None for j in jobs)  # metered even without prices (0 then)
    text = next(j for j in jobs if j["name"] == "Text Generation")
    assert text["model_type"] == "text" and text["requirements"]["min_memory_mb"] == 8192
    assert text["requirements"]["gpu_models"] == ["NVIDIA A100"]  # matched by tokens: it ran on an A100-80GB
    logs = await cluster.logs(text["id"])
    assert b"Text Generation on CUDA_VISIBLE_DEVICES='GPU-" in logs["stdout"] and logs["stdout"].endswith(b"done\n")


async def test_demo_predictions_pushes_the_example_models_and_runs_each(cluster: Cluster) -> None:
    await cluster.start_agent()
    env = {"GPUFLEET_URL": cluster.live.url, "GPUFLEET_API_KEY": cluster.owner.key}
    argv = ["demo", "--predictions", "--json", "--timeout", "120"]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv, env=env)
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout[result.stdout.index("[") :])
    by_model = {p["model"].split("/")[1]: p for p in done}
    assert sorted(by_model) == sorted(name for name, _ in DEMO_MODELS)
    assert {p["status"] for p in done} == {"succeeded"}, done
    assert by_model["echo"]["output"] == "hello from gpufleet hello from gpufleet"
    assert "".join(by_model["stream-text"]["output"]) == "tokens stream as they are made"
    assert len("".join(by_model["text-generation"]["output"]).split()) == 12
    assert (
        by_model["matmul"]["output"]["device"] in ("cpu", "python") or "cuda" in by_model["matmul"]["output"]["device"]
    )
    assert all(p["metrics"]["cold_start"] for p in done)  # each model's first prediction started its replica
    # The CLI streams a generator's text as it comes, joined as the model made it.
    argv = ["predict", f"{cluster.owner.org.slug}/stream-text", "-i", "text=a b c", "-i", "delay=0", "--stream"]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv, env=env)
    assert (result.exit_code, result.stdout) == (0, "a b c\n"), result.output
