"""Claiming predictions for a host's replicas: long-polls of ``POST /v1/agent/predictions/claim``.

One poll normally covers every ready replica of the host, each with the slots it offers. A poll is
never abandoned: its answer may hold predictions the server already handed over, or cancels and
drains it marked as told. Slots that free up while a poll waits are offered by another poll of
their own (each poll *reserves* what it offers, so two polls never offer the same slot). When no
slot is free, one poll offering none listens for cancels and drains. So at most one poll per
free slot, plus one, is outstanding (docs/agent.md, "Claims").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from gpufleet.agent.server_api import AgentApi, Refused, ServerUnreachable
from gpufleet.backoff import RetryDelay
from gpufleet.schemas.runner import ClaimIn, ClaimOut, ClaimReplicaIn

log = logging.getLogger("gpufleet.agent.runner")

QUIET_S = 0.1  # after an answer with nothing new (a cancel already passed on): no tight loop


class Claimable(Protocol):
    @property
    def key(self) -> str: ...  # the replica's job id

    @property
    def replica_id(self) -> UUID: ...

    @property
    def job_id(self) -> UUID: ...

    @property
    def attempt(self) -> int: ...

    @property
    def listed(self) -> bool: ...  # in the claims at all (ready or draining, connected)

    @property
    def free(self) -> int: ...  # slots it can take now


class Claimer:
    def __init__(
        self,
        api: AgentApi,
        credential: str,
        *,
        replicas: Callable[[], list[Claimable]],
        on_reply: Callable[[ClaimOut], bool],  # registers the work; True when the answer held something new
        backoff: RetryDelay,
        wait_s: float = 30.0,
    ) -> None:
        self.api, self.credential = api, credential
        self.replicas, self.on_reply, self.backoff, self.wait_s = replicas, on_reply, backoff, wait_s
        self.polls: dict[asyncio.Task[None], dict[str, int]] = {}  # poll -> slots it offers, per replica
        self.failures = 0
        self.closed = False
        self.claims_sent = 0

    def kick(self) -> None:
        """Something changed (a replica became ready, a prediction ended, a poll answered): offer
        what is free and not offered yet, or keep one poll listening."""
        if self.closed:
            return
        listed = [r for r in self.replicas() if r.listed]
        if not listed:
            return
        offered: dict[str, int] = {}
        for offer in self.polls.values():
            for key, n in offer.items():
                offered[key] = offered.get(key, 0) + n
        new = {r.key: r.free - offered.get(r.key, 0) for r in listed}
        new = {k: n for k, n in new.items() if n > 0}
        if new:
            self._start(new, listed)
        elif not self.polls:
            self._start({}, listed)

    def _start(self, offer: dict[str, int], listed: list[Claimable]) -> None:
        request = ClaimIn(
            wait_s=self.wait_s,
            replicas=[
                ClaimReplicaIn(
                    replica_id=r.replica_id, job_id=r.job_id, attempt=r.attempt, free_slots=offer.get(r.key, 0)
                )
                for r in listed
            ],
        )
        task = asyncio.create_task(self._poll(request), name="gpufleet-claim")
        log.debug("claim poll %s offers %s", id(task), offer)
        self.polls[task] = offer

    async def _poll(self, request: ClaimIn) -> None:
        task = asyncio.current_task()
        assert task is not None
        pause = 0.0
        try:
            self.claims_sent += 1
            reply = await self.api.claim(self.credential, request)
        except (ServerUnreachable, Refused) as exc:
            self.failures += 1
            pause = self.backoff(self.failures, getattr(exc, "retry_after", None))
            log.warning("claiming predictions failed (%s); retrying in %.1f s", exc, pause)
        else:
            self.failures = 0
            if not self.on_reply(reply):
                pause = QUIET_S
        if pause:
            await asyncio.sleep(pause)
        self.polls.pop(task, None)
        self.kick()

    def close(self) -> None:
        self.closed = True
        for task in self.polls:
            task.cancel()
        self.polls.clear()
