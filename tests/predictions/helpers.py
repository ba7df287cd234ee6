"""Models pushed straight through the repository, and an agent driven over HTTP with its host
credential: what the predictions tests need before a real model runner takes part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.models import Hardware, VersionRecord
from gpufleet.inference import archive, cog_schema
from gpufleet.repo import models
from gpufleet.repo import orgs as orgs_repo
from tests.api.agent_helpers import bearer, register, started
from tests.api.conftest import Tenant
from tests.scheduling.helpers import scheduler

ECHO = Path(__file__).resolve().parents[2] / "examples" / "models" / "echo"

GENERATOR = """
from cog import BasePredictor, Input
from typing import Iterator


class Predictor(BasePredictor):
    def predict(self, prompt: str = Input(description="Words", default="a b c")) -> Iterator[str]:
        for word in prompt.split():
            yield word
"""


def generator_dir(tmp: Path, marker: str = "") -> Path:
    (tmp / "cog.yaml").write_text('build:\n  gpu: false\npredict: "predict.py:Predictor"\n')
    (tmp / "predict.py").write_text(GENERATOR + f"\n# {marker}\n")
    return tmp


async def push(
    db: Database, t: Tenant, name: str = "echo", directory: Path = ECHO, hardware: Hardware | None = None
) -> VersionRecord:
    """Create the model if needed and push ``directory`` as its latest version."""
    data = archive.pack(directory)
    info = cog_schema.derive(archive.read_files(data))
    async with db.transaction(t.org.id) as conn:
        org = await orgs_repo.get(conn, org_id=t.org.id)
        assert org is not None
        m = await models.get_model(conn, org_id=t.org.id, name=name) or await models.create_model(
            conn,
            org_id=t.org.id,
            name=name,
            description="",
            hardware=hardware or Hardware(gpu_count=1, gpu_milli=500),
            created_by=None,
        )
        assert m is not None
        v, _ = await models.insert_version(
            conn,
            org_id=t.org.id,
            model_id=m.id,
            digest=archive.version_digest(org.slug, name, data),
            archive=data,
            info=info,
            created_by=None,
        )
        await models.set_latest(conn, org_id=t.org.id, model_id=m.id, version_id=v.id)
    return v


@dataclass
class Agent:
    """A host that speaks the agent protocol over HTTP, as the model runner would."""

    client: httpx.AsyncClient
    db: Database
    credential: str
    host_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.credential)

    async def assignments(self) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/agent/assignments", headers=self.headers)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["assignments"]
        return found

    async def start_replicas(self, **ready: Any) -> list[dict[str, Any]]:
        """Place what is pending, start every replica assigned here and report it ready."""
        await scheduler(self.db).run_once()
        out = []
        for a in await self.assignments():
            if a["replica"] is None:
                continue
            assert (await started(self.client, self.credential, a["job_id"], a["attempt"])).status_code == 204
            r = await self.state(a, "ready", **ready)
            assert r.status_code == 204, r.text
            out.append(a)
        return out

    async def state(self, a: dict[str, Any], state: str, **body: Any) -> httpx.Response:
        payload = {"job_id": a["job_id"], "attempt": a["attempt"], "state": state, **body}
        return await self.client.post(
            f"/v1/agent/replicas/{a['replica']['replica_id']}/state", json=payload, headers=self.headers
        )

    async def claim(self, replicas: list[dict[str, Any]], free: int = 1, wait_s: float = 0) -> dict[str, Any]:
        body = {
            "wait_s": wait_s,
            "replicas": [
                {
                    "replica_id": a["replica"]["replica_id"],
                    "job_id": a["job_id"],
                    "attempt": a["attempt"],
                    "free_slots": free,
                }
                for a in replicas
            ],
        }
        r = await self.client.post("/v1/agent/predictions/claim", json=body, headers=self.headers)
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        return reply

    async def events(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        r = await self.client.post("/v1/agent/predictions/events", json={"events": list(events)}, headers=self.headers)
        assert r.status_code == 200, r.text
        results: list[dict[str, Any]] = r.json()["results"]
        return results

    async def exit(self, a: dict[str, Any], status: str = "succeeded", **kw: Any) -> httpx.Response:
        body = {"attempt": a["attempt"], "status": status, "exit_code": 0 if status == "succeeded" else 1, **kw}
        return await self.client.post(f"/v1/agent/jobs/{a['job_id']}/exit", json=body, headers=self.headers)


async def agent(client: httpx.AsyncClient, db: Database, t: Tenant, name: str = "node-1", n: int = 2) -> Agent:
    reply = await register(client, t, name, n)
    return Agent(client, db, reply["credential"], reply["host_id"])


def done(prediction_id: str, replica_id: str, status: str = "succeeded", **kw: Any) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "replica_id": replica_id, "type": "done", "status": status, **kw}
