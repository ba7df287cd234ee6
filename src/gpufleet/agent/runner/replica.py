"""A replica as the agent's Model Runner tracks it (runner/supervisor.py), and the file markers of
the messages between the agent and a worker (runner/worker_io.py)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from gpufleet.agent.jobs.run import Run
from gpufleet.agent.runner.connection import WorkerConnection
from gpufleet.schemas.runner import ReplicaAssignmentOut

FILE_KEY = "$gpufleet_file"  # a cog.Path between the agent and the worker: {name, content_type, b64}
# A gpufleet file URL in an input: the agent fetches it with the host credential for the worker.
FILE_URL = re.compile(r"^https?://[^\s?#]+/v1/files/(?P<id>[0-9a-fA-F-]{36})(?:/download)?/?$")


@dataclass(eq=False)
class InFlight:
    id: str
    input: dict[str, Any] | None  # kept to send again if the worker never saw it
    chain: asyncio.Task[None] | None = None  # uploads in progress: later messages wait for them
    cancel_sent: bool = False


@dataclass(eq=False)
class Replica:
    run: Run
    spec: ReplicaAssignmentOut
    environment_s: float | None = None
    environment_cached: bool | None = None
    conn: WorkerConnection | None = None
    ready: bool = False  # reported ready to the server
    reported: str | None = None  # "ready" / "failed", once the server took it
    slots: int = 1
    inflight: dict[str, InFlight] = field(default_factory=dict)
    drain: bool = False
    shutdown_sent: bool = False
    setup_s: float | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None
    reporting: asyncio.Task[None] | None = None  # a state report on its way
    gone: bool = False

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def replica_id(self) -> UUID:
        return self.spec.replica_id

    @property
    def job_id(self) -> UUID:
        return self.run.job_id

    @property
    def attempt(self) -> int:
        return self.run.attempt

    @property
    def listed(self) -> bool:
        return self.ready and not self.gone and self.conn is not None and not self.conn.closed

    @property
    def free(self) -> int:
        return 0 if self.drain or not self.listed else max(0, self.slots - len(self.inflight))


def has_files(msg: dict[str, Any]) -> bool:
    return FILE_KEY in json.dumps(msg.get("item") if msg.get("type") == "output" else msg.get("output"))


def file_urls(value: Any) -> bool:
    if isinstance(value, str):
        return FILE_URL.match(value) is not None
    if isinstance(value, dict):
        return any(file_urls(v) for v in value.values())
    if isinstance(value, list):
        return any(file_urls(v) for v in value)
    return False
