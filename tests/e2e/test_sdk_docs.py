"""Every example of docs/sdk.md runs, as written, against a live server with a running agent
(simulated GPUs, jobs as real processes, as under `gpufleet up`): an example that cancels a job
which may already have finished, or runs a program its job user cannot reach, fails here."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from gpufleet.sdk import AsyncClient, Client
from tests.e2e.conftest import Cluster, until

DOC = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, re.S)


QUEUED = ("pending", "allocated")


def _cancel_once_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel arrives only once the agent has started the job (or it has ended): the timing of a
    fast agent under `gpufleet up`, where a `true` job is over before the next line runs."""
    sync_cancel, async_cancel = Client.cancel_job, AsyncClient.cancel_job

    def cancel(self: Client, job_id: UUID) -> Any:
        for _ in range(1000):  # 20 s at most
            if self.get_job(job_id).status.value not in QUEUED:
                break
            time.sleep(0.02)
        return sync_cancel(self, job_id)

    async def acancel(self: AsyncClient, job_id: UUID) -> Any:
        for _ in range(1000):
            if (await self.get_job(job_id)).status.value not in QUEUED:
                break
            await asyncio.sleep(0.02)
        return await async_cancel(self, job_id)

    monkeypatch.setattr(Client, "cancel_job", cancel)
    monkeypatch.setattr(AsyncClient, "cancel_job", acancel)


def _run(i: int, code: str) -> None:
    try:
        exec(compile(code, f"docs/sdk.md example {i + 1}", "exec"), {"__name__": "__main__"})  # noqa: S102
    except Exception as exc:
        raise AssertionError(f"docs/sdk.md example {i + 1} failed: {exc!r}\n{code}") from exc


async def test_every_example_runs(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPUFLEET_URL", cluster.live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", cluster.owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    # The default job users (as root: gpufleet-job-N, who cannot reach a Python under root's home).
    await cluster.start_agent(job_user="auto")
    _cancel_once_started(monkeypatch)
    assert len(EXAMPLES) >= 7
    for i, code in enumerate(EXAMPLES):
        await asyncio.to_thread(_run, i, code)  # sync clients: the agent runs on this event loop meanwhile

    async def all_finished() -> list[dict[str, object]] | None:
        r = await cluster.api.get("/v1/jobs", params={"limit": 100})
        jobs = r.json()["items"]
        return jobs if all(j["status"] in ("succeeded", "failed", "cancelled", "timed_out") for j in jobs) else None

    jobs = await until(all_finished, what="every job of the examples to finish")
    outcome = {str(j["name"]): j["status"] for j in jobs}
    assert outcome.pop("Text Generation") == "succeeded", jobs
    assert set(outcome.values()) == {"cancelled"}, jobs
