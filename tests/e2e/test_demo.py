"""`gpufleet demo`: the sketch's example jobs run as real processes and the dashboard sees them finish."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from gpufleet.cli.demo import demo_jobs
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
