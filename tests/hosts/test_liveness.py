"""The liveness sweep, judged by the database clock; tests backdate heartbeats instead of sleeping."""

from __future__ import annotations

from uuid import UUID

from gpufleet.background import liveness
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostStatus
from gpufleet.repo import gpus as gpus_repo
from gpufleet.services.heartbeats import heartbeat
from gpufleet.services.hosts import drain_host, get_host, start_host_maintenance
from tests.factories import create_org, ctx_for
from tests.hosts.helpers import event_types, gpus, register, report, sql


async def _silent_for(db: Database, host_id: UUID, seconds: int) -> None:
    await sql(
        db, "update hosts set last_heartbeat_at = now() - make_interval(secs => $2) where id = $1", host_id, seconds
    )


async def _lost(db: Database, org_id: UUID) -> list[UUID]:
    return [h.host_id for h in await liveness.run_once(db, timeout_s=50) if h.org_id == org_id]


async def test_49_seconds_is_alive_51_is_unreachable_and_a_heartbeat_brings_it_back(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id)
    await _silent_for(db, me.host_id, 49)
    assert await _lost(db, org.id) == []
    assert (await get_host(db, ctx_for(org.id), host_id=me.host_id)).status is HostStatus.READY

    await _silent_for(db, me.host_id, 51)
    assert await _lost(db, org.id) == [me.host_id]
    host = await get_host(db, ctx_for(org.id), host_id=me.host_id)
    assert host.status is HostStatus.UNREACHABLE and host.status_reason == "no heartbeat for 50 s"
    assert await _lost(db, org.id) == []  # once
    async with db.transaction(org.id) as conn:  # unschedulable while unreachable
        assert await gpus_repo.get_available_gpus(conn, org_id=org.id) == []

    result = await heartbeat(db, me, report(gpus(2)))
    assert result.host_status is HostStatus.READY
    assert await event_types(db, me.host_id) == ["host.registered", "host.unreachable", "host.ready"]
    async with db.transaction(org.id) as conn:
        assert {g.id for g in await gpus_repo.get_available_gpus(conn, org_id=org.id)} == {g.id for g in reg.gpus}


async def test_a_drain_survives_an_outage_and_maintenance_is_left_alone(db: Database) -> None:
    org = await create_org(db)
    _, drained = await register(db, org.id, "node-1")
    _, maint = await register(db, org.id, "node-2")
    await drain_host(db, ctx_for(org.id), host_id=drained.host_id, reason="kernel upgrade")
    await start_host_maintenance(db, ctx_for(org.id), host_id=maint.host_id)
    for h in (drained, maint):
        await _silent_for(db, h.host_id, 3600)
    assert await _lost(db, org.id) == [drained.host_id]
    assert (await get_host(db, ctx_for(org.id), host_id=maint.host_id)).status is HostStatus.MAINTENANCE
    result = await heartbeat(db, drained, report(gpus(2)))
    assert result.host_status is HostStatus.DRAINING
    assert await event_types(db, drained.host_id) == [
        "host.registered",
        "host.draining",
        "host.unreachable",
        "host.draining",
    ]


async def _control_plane_idle_for(db: Database, seconds: int) -> None:
    """As if no replica had run a liveness or reaper pass for ``seconds`` (all down, or no database)."""
    await sql(
        db,
        """insert into control_plane_clock (id, last_pass_at, resumed_at)
           values (true, now() - make_interval(secs => $1), '-infinity')
           on conflict (id) do update set last_pass_at = excluded.last_pass_at""",
        seconds,
    )


async def test_silence_while_no_replica_could_listen_does_not_count(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    # Every replica was down for five minutes; the host's last heartbeat landed just before.
    await _silent_for(db, me.host_id, 300)
    await _control_plane_idle_for(db, 300)
    assert await _lost(db, org.id) == []  # the first pass after the outage judges nobody
    async with db.system_transaction() as conn:
        resumed = await conn.fetchval("select now() - resumed_at < interval '5 seconds' from control_plane_clock")
    assert resumed
    # The host gets the whole timeout counted from the end of the outage, then is judged as usual.
    await sql(db, "update control_plane_clock set resumed_at = now() - interval '49 seconds'")
    assert await _lost(db, org.id) == []
    await sql(db, "update control_plane_clock set resumed_at = now() - interval '51 seconds'")
    assert await _lost(db, org.id) == [me.host_id]


async def test_passes_every_few_seconds_are_no_outage(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    await _silent_for(db, me.host_id, 300)
    await _control_plane_idle_for(db, 15)  # under the 20 s gap: some replica was running
    assert await _lost(db, org.id) == [me.host_id]
