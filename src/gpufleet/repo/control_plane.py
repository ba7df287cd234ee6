"""The control plane's clock: when some replica last ran a liveness or reaper pass (system path).

If no pass ran for longer than the outage gap, every replica was down or cut off from the
database; nobody could hear the agents then, so their silence over that time is not held
against them: ``resumed_at`` marks the end of the outage, and host silence and host-loss grace
are counted from no earlier than it.
"""

from __future__ import annotations

from datetime import datetime

from gpufleet.db.pool import Connection as Conn


async def observe(conn: Conn, *, outage_gap_s: float) -> datetime | None:
    """Record a pass now; the end of the last control-plane outage (database clock), None if none was seen."""
    value: datetime | None = await conn.fetchval(
        """insert into control_plane_clock (id, last_pass_at, resumed_at) values (true, now(), '-infinity')
           on conflict (id) do update
              set resumed_at = case when control_plane_clock.last_pass_at < now() - make_interval(secs => $1)
                                    then now() else control_plane_clock.resumed_at end,
                  last_pass_at = greatest(control_plane_clock.last_pass_at, now())
        returning case when resumed_at = '-infinity' then null else resumed_at end""",
        outage_gap_s,
    )
    return value
