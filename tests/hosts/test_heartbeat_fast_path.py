"""The heartbeat's cheaper paths keep their guarantees: the one-round-trip tenant transaction
(RLS, commit, rollback) and the pathless check for unstorable text (same verdicts and messages)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpufleet.db.pool import Database
from gpufleet.schemas.agent import GpuMetricsIn, HeartbeatRequest
from gpufleet.schemas.common import _name_unstorable, _storable
from tests.factories import create_host, create_org


async def test_flat_transaction_is_a_tenant_transaction(db: Database) -> None:
    a, b = await create_org(db, "Alpha"), await create_org(db, "Beta")
    (ha, _), (hb, _) = await create_host(db, a.id), await create_host(db, b.id)
    async with db.flat_transaction(a.id) as conn:
        assert await conn.fetchval("select current_setting('gpufleet.org_id')") == str(a.id)
        assert await conn.fetchval("select current_setting('gpufleet.user_id')") == ""
        assert await conn.fetchval("select current_user") == "gpufleet_app"
        seen = {r[0] for r in await conn.fetch("select id from hosts")}
        assert ha.id in seen and hb.id not in seen
        await conn.execute("update hosts set status_reason = 'flat' where id = $1", ha.id)
    async with db.transaction(a.id) as conn:
        assert await conn.fetchval("select status_reason from hosts where id = $1", ha.id) == "flat"


async def test_flat_transaction_rolls_back_on_error_and_leaves_a_clean_connection(db: Database) -> None:
    org = await create_org(db)
    host, _ = await create_host(db, org.id)
    with pytest.raises(RuntimeError):
        async with db.flat_transaction(org.id) as conn:
            await conn.execute("update hosts set status_reason = 'lost' where id = $1", host.id)
            raise RuntimeError("boom")
    async with db.transaction(org.id) as conn:
        assert await conn.fetchval("select status_reason from hosts where id = $1", host.id) is None
    # The setting was transaction-local and no transaction is left open on the pooled connections.
    async with db.runtime_pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("select current_setting('gpufleet.org_id', true)") in (None, "")


async def test_flat_transaction_refuses_anything_but_a_uuid(db: Database) -> None:
    with pytest.raises(ValueError):
        async with db.flat_transaction("x'; drop table hosts; --"):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "b": ["x", "é", "ok"]},
        {"a": ["x", "bad\x00"]},
        {"a": ["\ud83d", "\ude00"]},
        {"k\x00": 1},
        {"a": [{"b": [1, "c\x00"]}]},
        ["ok", ("t", "\x00")],
        "fine",
        "\x00",
    ],
)
def test_fast_text_check_agrees_with_the_naming_walk(value: object) -> None:
    def verdict(check: object) -> str | None:
        try:
            check(value, "")  # type: ignore[operator]
        except ValueError as exc:
            return str(exc)
        return None

    assert verdict(_storable) == verdict(_name_unstorable)


def test_unstorable_sample_text_is_named() -> None:
    body = {
        "gpus": [],
        "metrics": [{"uuid": "GPU-1", "ts": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01\x00Z"]}],
    }
    with pytest.raises(ValidationError) as err:
        HeartbeatRequest.model_validate(body)
    assert "metrics[0].ts[1]: must not contain NUL characters" in str(err.value)


def test_nested_request_models_still_check_on_their_own() -> None:
    ok = {"gpus": [], "metrics": [{"uuid": "GPU-1", "ts": ["2026-01-01T00:00:00Z"]}]}
    HeartbeatRequest.model_validate(ok)  # the "checked" mark must not outlive the body it was set for
    with pytest.raises(ValidationError):
        HeartbeatRequest.model_validate({"gpus": [], "metrics": [{"uuid": "GPU\x00", "ts": []}]})
    with pytest.raises(ValidationError) as err:
        GpuMetricsIn.model_validate({"uuid": "GPU\x00", "ts": []})
    assert "uuid: must not contain NUL characters" in str(err.value)
