"""Registration and host credentials."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HOST_REMOVED, NOT_REPORTED, GpuStatus, HostStatus
from gpufleet.errors import Conflict, InvalidInput, Unauthorized
from gpufleet.services.hosts import authenticate_host, register_host, remove_host, revoke_host
from tests.factories import create_org, ctx_for
from tests.hosts.helpers import event_types, facts, gpu, gpus, join_token, register, sql, val


async def test_register_creates_the_host_its_gpus_and_a_credential(db: Database) -> None:
    org = await create_org(db)
    await sql(
        db, "insert into gpu_prices (organization_id, gpu_model, hourly_price) values ($1, 'A100-80GB', 2.5)", org.id
    )
    secret = await join_token(db, org.id)
    reported = [*gpus(2), gpu(2, model="T4", memory_mb=15360)]
    reg = await register_host(db, secret, facts("node-1"), reported, labels={"rack": "r4"}, name="node-1")

    host = reg.host
    assert (host.organization_id, host.name, host.status, host.labels) == (
        org.id,
        "node-1",
        HostStatus.READY,
        {"rack": "r4"},
    )
    assert host.simulated and host.cpu_cores == 64 and host.driver_version == "550.54"
    assert (
        host.last_heartbeat_at is not None and host.credential_prefix == reg.credential[: len(host.credential_prefix)]
    )
    assert [(g.uuid, g.model, g.status, g.simulated, g.hourly_price) for g in reg.gpus] == [
        ("GPU-node-1-0", "A100-80GB", GpuStatus.AVAILABLE, True, Decimal("2.5000")),
        ("GPU-node-1-1", "A100-80GB", GpuStatus.AVAILABLE, True, Decimal("2.5000")),
        ("GPU-node-1-2", "T4", GpuStatus.AVAILABLE, True, None),
    ]
    assert (
        await val(db, "select credential_hash from hosts where id = $1", host.id)
        == hashlib.sha256(reg.credential.encode()).digest()
    )
    assert await event_types(db, host.id) == ["host.registered"]
    for g in reg.gpus:
        assert await event_types(db, g.id) == ["gpu.added"]

    identity = await authenticate_host(db, reg.credential)
    assert (identity.host_id, identity.org_id, identity.name, identity.simulated) == (host.id, org.id, "node-1", True)


async def test_registration_input_is_validated_before_anything_is_spent(db: Database) -> None:
    org = await create_org(db)
    secret = await join_token(db, org.id, max_uses=1)
    with pytest.raises(InvalidInput, match=r"gpus\[1\]\.uuid") as err:
        await register_host(db, secret, facts(), [gpu(0), gpu(0)])
    assert err.value.extra["field"] == "gpus[1].uuid"
    with pytest.raises(InvalidInput, match=r"gpus\[0\]\.memory_mb"):
        await register_host(db, secret, facts(), [gpu(0, memory_mb=0)])
    with pytest.raises(InvalidInput, match=r"facts\.hostname"):
        await register_host(db, secret, facts(""), gpus(1), name="x")
    await register_host(db, secret, facts(), gpus(1))  # the single use is still there


async def test_name_of_a_live_host_is_a_conflict(db: Database) -> None:
    org = await create_org(db)
    await register(db, org.id, "node-1")
    with pytest.raises(Conflict, match="'node-1' is already registered"):
        await register_host(db, await join_token(db, org.id), facts("node-1"), gpus(1))
    # Another organization may use the name.
    other = await create_org(db, "Other")
    await register(db, other.id, "node-1")


async def test_credentials_are_refused_clearly(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id)
    with pytest.raises(Unauthorized, match="malformed host credential"):
        await authenticate_host(db, reg.credential[:-1] + ("a" if reg.credential[-1] != "a" else "b"))
    with pytest.raises(Unauthorized, match="unknown host credential"):
        await authenticate_host(db, security.issue(security.HOST_CREDENTIAL).secret)
    await revoke_host(db, ctx_for(org.id), host_id=reg.host.id)
    with pytest.raises(Unauthorized, match="host credential revoked"):
        await authenticate_host(db, reg.credential)
    assert await event_types(db, reg.host.id) == ["host.registered", "host.revoked"]


async def test_a_revoked_host_re_registers_in_place(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id, n=3)
    first, second, third = reg.gpus
    await sql(db, "update gpu_resources set hourly_price = 9.99 where id = $1", first.id)
    await sql(db, "update gpu_resources set status = 'unhealthy', status_reason = 'XID' where id = $1", second.id)
    await sql(
        db, "insert into gpu_prices (organization_id, gpu_model, hourly_price) values ($1, 'A100-80GB', 2.5)", org.id
    )
    await revoke_host(db, ctx_for(org.id), host_id=reg.host.id)

    again = await register_host(db, await join_token(db, org.id), facts("node-1", driver_version="560.1"), gpus(2))
    assert again.reregistered and again.host.id == reg.host.id and again.host.revoked_at is None
    assert again.host.driver_version == "560.1"
    by_id = {g.id: g for g in again.gpus}
    assert by_id[first.id].hourly_price == Decimal("9.9900")  # the override stays
    assert by_id[second.id].status is GpuStatus.UNHEALTHY  # health is the admin's to clear
    assert (by_id[third.id].status, by_id[third.id].status_reason) == (GpuStatus.OFFLINE, NOT_REPORTED)
    with pytest.raises(Unauthorized, match="unknown host credential"):
        await authenticate_host(db, reg.credential)
    assert (await authenticate_host(db, again.credential)).host_id == reg.host.id


async def test_a_removed_host_frees_its_name(db: Database) -> None:
    org = await create_org(db)
    reg, _ = await register(db, org.id)
    removed = await remove_host(db, ctx_for(org.id), host_id=reg.host.id)
    assert removed.removed_at is not None and removed.revoked_at is not None
    assert await val(
        db, "select array_agg(distinct status_reason) from gpu_resources where host_id = $1", reg.host.id
    ) == [HOST_REMOVED]
    with pytest.raises(Unauthorized, match="removed"):
        await authenticate_host(db, reg.credential)
    fresh = await register_host(db, await join_token(db, org.id), facts("node-1"), gpus(2))
    assert not fresh.reregistered and fresh.host.id != reg.host.id and fresh.host.name == "node-1"
