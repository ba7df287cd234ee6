"""The liveness sweep: hosts silent past the heartbeat timeout become unreachable.

Judged by the database clock alone (``now()`` in SQL), never by an agent's or a replica's
clock, on ``hosts.last_heartbeat_at``, which every replica writes for the heartbeats it
receives: a host is silent only when no replica has heard from it. Time when no replica could
hear (every replica down, or the database unreachable: no pass of this sweep or the reaper ran
for ``outage_gap_s``) is not counted (repo/control_plane.py). Unreachable hosts take no new work
(the scheduler uses ready hosts; the ledger trigger refuses others); their next heartbeat brings
them back. Safe to run on every replica at once.
"""

from __future__ import annotations

import asyncio

from gpufleet import states
from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostStatus
from gpufleet.repo import control_plane, events
from gpufleet.repo import hosts as hosts_repo
from gpufleet.repo.hosts import LostHost

# Maintenance hosts are out of service on purpose: silence there is expected.
WATCHED = (HostStatus.READY, HostStatus.DRAINING)
assert set(WATCHED) <= set(states.sources(states.HOST_TRANSITIONS, HostStatus.UNREACHABLE))


def outage_gap_s(settings: Settings) -> float:
    """No liveness or reaper pass on any replica for this long means the control plane was down."""
    return 2.0 * max(settings.liveness_interval_s, settings.reaper_interval_s)


async def run_once(db: Database, *, timeout_s: float = 50.0, outage_gap_s: float = 20.0) -> list[LostHost]:
    """Mark every ready or draining host silent for more than ``timeout_s`` unreachable."""
    async with db.system_transaction() as conn:  # its own short transaction: one row every pass updates
        resumed_at = await control_plane.observe(conn, outage_gap_s=outage_gap_s)
    async with db.system_transaction() as conn:
        lost = await hosts_repo.mark_unreachable(
            conn, timeout_s=timeout_s, from_statuses=WATCHED, resumed_at=resumed_at
        )
        await events.append_many(
            conn,
            [
                (
                    h.org_id,
                    "host",
                    h.host_id,
                    "host.unreachable",
                    {
                        "from": h.from_status.value,
                        "to": HostStatus.UNREACHABLE.value,
                        "reason": f"no heartbeat for {h.silent_s:.0f} s",
                        "last_heartbeat_at": h.last_heartbeat_at.isoformat() if h.last_heartbeat_at else None,
                    },
                )
                for h in lost
            ],
            actor="liveness",
        )
    return lost


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db, timeout_s=settings.heartbeat_timeout_s, outage_gap_s=outage_gap_s(settings))

    await run_periodically("liveness", once, interval_s=settings.liveness_interval_s, stop=stop)
