"""The heartbeat's column-wise path: the same answers as sample by sample, and the one statement."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import NOT_REPORTED, GpuSample, HeartbeatPolicy, series_of
from gpufleet.errors import InvalidInput
from gpufleet.services import inventory
from gpufleet.services.heartbeats import heartbeat
from tests.factories import create_org
from tests.hosts.helpers import db_now, gpu, gpus, register, report, sample, sql, val

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _outcome(fn: object, *args: object) -> object:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except InvalidInput as exc:
        return ("refused", exc.message, exc.extra.get("field"))


BAD = [
    {"utilization_pct": 100.5},
    {"utilization_pct": float("nan")},
    {"temperature_c": float("inf")},
    {"temperature_c": -101.0},
    {"memory_used_mb": -1},
    {"memory_used_mb": 2**31},
    {"power_w": 100_001.0},
    {"ecc_uncorrected": -3},
    {"xid_errors": 2**63},
    {"process_count": -1},
    {"ts": datetime(2026, 11, 30, 12)},  # naive
    {"uuid": ""},
    {"uuid": "x" * 129},
    {"utilization_pct": None, "temperature_c": None},  # not bad: fields left out
]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("at", [0, 5, 11])
def test_column_validation_agrees_with_sample_by_sample(bad: dict[str, object], at: int) -> None:
    policy = HeartbeatPolicy()
    samples = [sample(f"GPU-{i % 3}", T0 + timedelta(seconds=i)) for i in range(12)]
    fields = {k: v for k, v in bad.items() if k not in ("ts", "uuid")}
    samples[at] = GpuSample(
        uuid=str(bad.get("uuid", samples[at].uuid)),
        ts=bad.get("ts", samples[at].ts),  # type: ignore[arg-type]
        **{**{k: getattr(samples[at], k) for k in inventory._RANGES}, **fields},  # type: ignore[arg-type]
    )
    expected = _outcome(inventory.validate_samples, samples, policy)
    assert _outcome(inventory.validate_series, series_of(samples), policy) == expected


def test_column_validation_counts_every_sample_against_the_limit() -> None:
    samples = [sample("GPU-0", T0 + timedelta(seconds=i)) for i in range(11)]
    with pytest.raises(InvalidInput, match="holds 11 samples; at most 10") as exc:
        inventory.validate_series(series_of(samples), HeartbeatPolicy(max_samples=10))
    assert exc.value.extra["field"] == "samples"


def _random_samples(rng: random.Random) -> list[GpuSample]:
    out = []
    for _ in range(rng.randint(1, 12)):
        out.append(
            GpuSample(
                uuid="GPU-0",
                ts=T0 + timedelta(seconds=rng.randint(0, 5)),  # ties: the later one counts as the latest
                utilization_pct=None,
                memory_used_mb=rng.choice([None, 0, 500, 4096]),
                temperature_c=rng.choice([None, 60.0, 95.5]),
                power_w=None,
                ecc_uncorrected=rng.choice([None, 0, 0, 2]),
                xid_errors=rng.choice([None, 3, 3, 3, 5]),
                process_count=rng.choice([None, 0, 1, 2]),
            )
        )
    return out


def test_column_health_assessment_agrees_with_sample_by_sample() -> None:
    rng = random.Random(15)
    policy = HeartbeatPolicy()
    for _ in range(500):
        samples = _random_samples(rng)
        xid_prev = rng.choice([None, 0, 3, 4])
        allocated = rng.choice([0, 0, 1000])
        assert inventory._assess_series(series_of(samples), xid_prev, allocated, policy) == inventory._assess(
            list(samples), xid_prev, allocated, policy
        )


async def test_a_gpu_added_by_the_heartbeat_gets_its_samples_too(db: Database) -> None:
    org = await create_org(db)
    _, me = await register(db, org.id)
    now = await db_now(db)
    new = gpu(2)
    samples = [sample(g.uuid, now) for g in [*gpus(2), new]]
    result = await heartbeat(db, me, report([*gpus(2), new], samples))
    assert (result.gpus_added, result.samples_received) == (1, 3)
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 3


async def test_samples_go_with_their_gpu_and_organization(db: Database) -> None:
    # No per-row foreign keys on the samples (migration 0019): a trigger keeps the cascade.
    org = await create_org(db)
    _, me = await register(db, org.id)
    other = await create_org(db, "Other")
    _, theirs = await register(db, other.id)
    now = await db_now(db)
    for who in (me, theirs):
        await heartbeat(db, who, report(gpus(2), [sample(g.uuid, now) for g in gpus(2)]))
    await sql(db, "delete from gpu_resources where host_id = $1 and index = 0", me.host_id)
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 1
    await sql(db, "delete from organizations where id = $1", org.id)  # cascades to hosts and GPUs
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 0
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", other.id) == 2


async def test_only_a_flat_transaction_skips_the_pool_reset(db: Database) -> None:
    org = await create_org(db)

    async def session_name() -> str:
        async with db.runtime_pool.acquire() as conn:
            return str(await conn.fetchval("select current_setting('application_name')"))

    default = await session_name()
    for flat_first in (False, True):
        if flat_first:  # marked clean, released unreset; the mark is spent on that release
            async with db.flat_transaction(org.id) as conn:
                await conn.fetchval("select 1")
        # The pool hands back its most recent connection: each use below gets the same one.
        async with db.runtime_pool.acquire() as conn:
            await conn.execute("set application_name = 'left-over'")  # session state: must be reset
        assert await session_name() == default


async def test_a_heartbeat_that_waited_for_the_host_sees_what_the_other_writer_committed(db: Database) -> None:
    # The statement reads the GPUs in its own snapshot; after waiting for the host's lock it
    # reads them again: here the other writer took a GPU offline as not reported, and this
    # report, which lists it, must bring it back (its snapshot alone saw nothing to change).
    org = await create_org(db)
    _, me = await register(db, org.id)
    now = await db_now(db)
    await heartbeat(db, me, report(gpus(2), [sample(g.uuid, now) for g in gpus(2)]))
    beat = report(gpus(2), [sample(g.uuid, now + timedelta(seconds=1)) for g in gpus(2)])
    async with db.system_transaction() as conn:
        await conn.execute("update hosts set status_reason = 'busy' where id = $1", me.host_id)
        waiting = asyncio.create_task(heartbeat(db, me, beat))
        await asyncio.sleep(0.3)  # the heartbeat's statement has its snapshot and waits for the host's lock
        await conn.execute(
            "update gpu_resources set status = 'offline', status_reason = $2 where host_id = $1 and index = 0",
            me.host_id,
            NOT_REPORTED,
        )
        assert not waiting.done()
    result = await asyncio.wait_for(waiting, 10)
    assert (result.gpus_changed, result.samples_received) == (1, 2)
    assert await val(db, "select status from gpu_resources where host_id = $1 and index = 0", me.host_id) == "available"
    assert await val(db, "select count(*) from gpu_metrics where organization_id = $1", org.id) == 4
