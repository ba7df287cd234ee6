"""Heartbeats: database-clock liveness, inventory, health, the truth check, samples, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import NOT_REPORTED, GpuStatus, HeartbeatPolicy, HostIdentity, HostStatus
from gpufleet.errors import InvalidInput, Unauthorized
from gpufleet.limits import MAX_PAGE
from gpufleet.services.heartbeats import heartbeat
from gpufleet.services.host_views import page_gpus
from gpufleet.services.hosts import clear_gpu_health, revoke_host
from tests.factories import create_job, create_org, ctx_for
from tests.hosts.helpers import db_now, event_types, facts, gpu, gpus, register, report, sample, sql, val


async def _gpu_rows(db: Database, host_id: object) -> dict[str, tuple[str, str | None, str | None, int]]:
    async with db.system_transaction() as conn:
        rows = await conn.fetch(
            "select uuid, status, status_reason, foreign_usage, version from gpu_resources where host_id = $1", host_id
        )
    return {r["uuid"]: (r["status"], r["status_reason"], r["foreign_usage"], r["version"]) for r in rows}


async def test_heartbeat_uses_the_database_clock_and_stores_samples(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id)
    await sql(db, "update hosts set last_heartbeat_at = now() - interval '30 seconds' where id = $1", me.host_id)
    now = await db_now(db)
    # The agent's clock is 20 minutes behind: its timestamps are stored, never used for liveness.
    skewed = now - timedelta(minutes=20)
    samples = [
        sample(g.uuid, skewed + timedelta(seconds=s), utilization_pct=10.0 * s) for g in gpus(2) for s in range(3)
    ]
    result = await heartbeat(db, me, report(gpus(2), samples, facts=facts(driver_version="560.1")))
    assert result.host_status is HostStatus.READY and result.samples_received == 6
    assert (result.gpus_added, result.gpus_changed, result.next_heartbeat_s) == (0, 0, 10.0)
    age = await val(db, "select now() - last_heartbeat_at from hosts where id = $1", me.host_id)
    assert isinstance(age, timedelta) and age < timedelta(seconds=5)
    assert await val(db, "select driver_version from hosts where id = $1", me.host_id) == "560.1"
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 6
    assert await val(
        db, "select max(utilization_pct) from gpu_metrics where gpu_id = $1", reg.gpus[1].id
    ) == pytest.approx(20.0)


async def test_steady_heartbeats_do_not_rewrite_gpu_rows_and_retries_are_harmless(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    before = await _gpu_rows(db, me.host_id)
    now = await db_now(db)
    beat = report(gpus(2), [sample(g.uuid, now) for g in gpus(2)])
    await heartbeat(db, me, beat)
    await heartbeat(db, me, beat)  # the agent retries a heartbeat whose answer it lost
    assert await _gpu_rows(db, me.host_id) == before
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 2


async def test_missing_gpus_go_offline_and_come_back_new_ones_are_added(db: Database) -> None:
    org = await create_org(db)
    await sql(db, "insert into gpu_prices (organization_id, gpu_model, hourly_price) values ($1, 'H100', 4)", org.id)
    reg, me = await register(db, org.id, n=3)
    await sql(db, "update gpu_resources set status = 'unhealthy', status_reason = 'hot' where id = $1", reg.gpus[2].id)
    result = await heartbeat(db, me, report([gpu(0)]))
    assert (result.gpus_added, result.gpus_changed) == (0, 1)
    rows = await _gpu_rows(db, me.host_id)
    assert rows["GPU-node-1-1"][:2] == ("offline", NOT_REPORTED)
    assert rows["GPU-node-1-2"][:2] == ("unhealthy", "hot")  # an admin owns unhealthy GPUs
    assert await event_types(db, reg.gpus[1].id) == ["gpu.added", "gpu.offline"]

    result = await heartbeat(db, me, report([gpu(0), gpu(1), gpu(5, model="H100")]))
    assert (result.gpus_added, result.gpus_changed) == (1, 1)
    rows = await _gpu_rows(db, me.host_id)
    assert rows["GPU-node-1-1"][:2] == ("available", None)
    assert await event_types(db, reg.gpus[1].id) == ["gpu.added", "gpu.offline", "gpu.available"]
    added = [g for g in await page_gpus(db, ctx_for(org.id), limit=MAX_PAGE) if g.uuid == "GPU-node-1-5"]
    assert len(added) == 1 and added[0].hourly_price == 4 and added[0].simulated
    assert await event_types(db, added[0].id) == ["gpu.added"]


async def test_health_rules_mark_gpus_unhealthy_until_an_admin_clears_them(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id, n=4)
    g0, g1, g2, g3 = (g.uuid for g in reg.gpus)
    now = await db_now(db)
    policy = HeartbeatPolicy(temperature_limit_c=85)
    samples = [
        sample(g0, now - timedelta(seconds=2), xid_errors=0),
        sample(g0, now - timedelta(seconds=1), xid_errors=2),
        sample(g1, now, ecc_uncorrected=3),
        sample(g2, now - timedelta(seconds=1), temperature_c=86.5),
        sample(g2, now, temperature_c=70.0),
        sample(g3, now, temperature_c=85.0),  # at the limit is fine
    ]
    await heartbeat(db, me, report(gpus(4), samples), policy=policy)
    rows = await _gpu_rows(db, me.host_id)
    assert {u: rows[u][:2] for u in (g0, g1, g2, g3)} == {
        g0: ("unhealthy", "XID errors rose from 0 to 2"),
        g1: ("unhealthy", "3 uncorrected ECC errors"),
        g2: ("unhealthy", "temperature 86.5 C above the 85 C limit"),
        g3: ("available", None),
    }
    assert await event_types(db, reg.gpus[0].id) == ["gpu.added", "gpu.unhealthy"]

    # Healthy samples do not bring a GPU back; only an admin does.
    await heartbeat(db, me, report(gpus(4), [sample(g0, now + timedelta(seconds=1), xid_errors=2)]), policy=policy)
    assert (await _gpu_rows(db, me.host_id))[g0][0] == "unhealthy"
    cleared = await clear_gpu_health(db, ctx_for(org.id), gpu_id=reg.gpus[0].id)
    assert cleared.status is GpuStatus.AVAILABLE and cleared.xid_errors_last == 2
    # The same count again is no new error; an agent restart (count falls) resets the baseline.
    await heartbeat(db, me, report(gpus(4), [sample(g0, now + timedelta(seconds=2), xid_errors=2)]))
    await heartbeat(db, me, report(gpus(4), [sample(g0, now + timedelta(seconds=3), xid_errors=0)]))
    assert (await _gpu_rows(db, me.host_id))[g0][0] == "available"
    await heartbeat(db, me, report(gpus(4), [sample(g0, now + timedelta(seconds=4), xid_errors=1)]))
    assert (await _gpu_rows(db, me.host_id))[g0][:2] == ("unhealthy", "XID errors rose from 0 to 1")
    assert await event_types(db, reg.gpus[0].id) == ["gpu.added", "gpu.unhealthy", "gpu.available", "gpu.unhealthy"]


async def test_truth_check_flags_usage_gpufleet_did_not_allocate(db: Database) -> None:
    org = await create_org(db)
    reg, me = await register(db, org.id, n=3)
    g0, g1, g2 = (g.uuid for g in reg.gpus)
    job = await create_job(db, org.id)
    await sql(db, "update jobs set status = 'allocated', host_id = $2 where id = $1", job.id, me.host_id)
    await sql(
        db,
        """insert into allocations (organization_id, job_id, gpu_id, host_id, attempt, milli, memory_mb)
           values ($1, $2, $3, $4, 1, 1000, 1000)""",
        org.id,
        job.id,
        reg.gpus[2].id,
        me.host_id,
    )
    now = await db_now(db)
    samples = [
        sample(g0, now - timedelta(seconds=1), memory_used_mb=0, process_count=0),
        sample(g0, now, memory_used_mb=1843, process_count=2),
        sample(g1, now, memory_used_mb=512, process_count=0),  # at the threshold: ours to ignore
        sample(g2, now, memory_used_mb=40000, process_count=1),  # allocated: expected
    ]
    await heartbeat(db, me, report(gpus(3), samples))
    rows = await _gpu_rows(db, me.host_id)
    assert rows[g0][2] == "1843 MiB in use and 2 processes while gpufleet has nothing allocated"
    assert rows[g1][2] is None and rows[g2][2] is None
    version = rows[g0][3]
    # Still in use (other numbers): no rewrite, no new event.
    await heartbeat(
        db, me, report(gpus(3), [sample(g0, now + timedelta(seconds=1), memory_used_mb=100, process_count=1)])
    )
    rows = await _gpu_rows(db, me.host_id)
    assert rows[g0][2:] == ("1843 MiB in use and 2 processes while gpufleet has nothing allocated", version)
    await heartbeat(
        db, me, report(gpus(3), [sample(g0, now + timedelta(seconds=2), memory_used_mb=100, process_count=0)])
    )
    assert (await _gpu_rows(db, me.host_id))[g0][2] is None
    async with db.system_transaction() as conn:
        data = [
            r["data"]
            for r in await conn.fetch(
                "select data from events where entity_id = $1 and type = 'gpu.foreign_usage' order by seq",
                reg.gpus[0].id,
            )
        ]
    assert data == [
        {"foreign_usage": "1843 MiB in use and 2 processes while gpufleet has nothing allocated"},
        {"foreign_usage": None},
    ]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda now, u: [sample(u, now), sample(u, now, utilization_pct=120.0)], "samples[1].utilization_pct"),
        (lambda now, u: [sample(u, now - timedelta(days=1, seconds=5))], "samples[0].ts"),
        (lambda now, u: [sample(u, now + timedelta(days=2))], "samples[0].ts"),
        (lambda now, u: [sample(u, now.replace(tzinfo=None))], "samples[0].ts"),
        (lambda now, u: [sample("GPU-somebody-else", now)], "samples[0].uuid"),
        (lambda now, u: [sample(u, now, memory_used_mb=-1)], "samples[0].memory_used_mb"),
        (lambda now, u: [sample(u, now, power_w=float("nan"))], "samples[0].power_w"),
        (lambda now, u: [sample(u, now + timedelta(seconds=i)) for i in range(6)], "samples"),
    ],
)
async def test_malformed_reports_are_refused_and_change_nothing(db: Database, mutate: object, field: str) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    await sql(db, "update hosts set last_heartbeat_at = now() - interval '40 seconds' where id = $1", me.host_id)
    before = await val(db, "select last_heartbeat_at from hosts where id = $1", me.host_id)
    now = await db_now(db)
    with pytest.raises(InvalidInput) as err:
        await heartbeat(db, me, report([gpu(0)], mutate(now, "GPU-node-1-0")), policy=HeartbeatPolicy(max_samples=5))  # type: ignore[operator]
    assert err.value.extra["field"] == field
    assert field in str(err.value)
    assert await val(db, "select last_heartbeat_at from hosts where id = $1", me.host_id) == before
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 0
    assert (await _gpu_rows(db, me.host_id))["GPU-node-1-1"][0] == "available"  # not taken offline


async def test_a_report_touches_only_its_own_host(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    _, alpha = await register(db, a.id, "node-a")
    reg_b, beta = await register(db, b.id, "node-b")
    now = await db_now(db)
    # Alpha's agent names Beta's GPU: unknown to its host, refused.
    with pytest.raises(InvalidInput, match="neither has nor reports"):
        await heartbeat(db, alpha, report(gpus(2, host="node-a"), [sample(reg_b.gpus[0].uuid, now)]))
    # A forged identity (Alpha's organization, Beta's host) finds no host under RLS.
    forged = HostIdentity(host_id=beta.host_id, org_id=a.id, name="node-b", simulated=True)
    with pytest.raises(Unauthorized):
        await heartbeat(db, forged, report([]))
    assert await _gpu_rows(db, beta.host_id) == {g.uuid: ("available", None, None, 1) for g in reg_b.gpus}
    # Even a hand-written statement in Alpha's transaction cannot write Beta's metrics.
    import asyncpg

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.transaction(a.id) as conn:
            await conn.execute(
                "insert into gpu_metrics (organization_id, gpu_id, ts) values ($1, $2, now())", b.id, reg_b.gpus[0].id
            )


async def test_a_revoked_host_cannot_heartbeat(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    await revoke_host(db, ctx_for(org.id), host_id=me.host_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await heartbeat(db, me, report(gpus(2)))
