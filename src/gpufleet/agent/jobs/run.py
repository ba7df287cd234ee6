"""One (job, attempt) as the agent's job loop tracks it (agent/jobs/runner.py, agent/jobs/restart.py)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from gpufleet.agent.processes.runtime import ExitOutcome


@dataclass(eq=False)
class Run:
    job_id: UUID
    attempt: int
    gpus: tuple[str, ...] = ()
    max_runtime_s: int | None = None
    started_at: datetime | None = None
    pid: int | None = None
    started_reported: bool = False
    fenced: bool = False
    finished: bool = False  # exit reported (or dropped): no longer "running" for the server
    bad_spec: ExitOutcome | None = None  # the assignment could not even become a ProcessSpec
    start_settled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stopping: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return str(self.job_id)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stop`` was set meanwhile."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
