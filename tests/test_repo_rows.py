"""repo/rows.mapper: the one way a row becomes a domain object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import uuid4

import pytest

from gpufleet.db.pool import Database
from gpufleet.repo.rows import Table, from_row, mapper, optional
from tests.factories import create_org


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Thing:
    id: int
    colour: Colour
    total: int
    tags: list[str]
    kind: str = "thing"


def test_columns_by_name_with_converters_computed_and_optional_fields() -> None:
    read = mapper(Thing, colour=Colour, total=from_row(lambda r: r["a"] + r["b"]), tags=list, kind=optional("thing"))
    row = {"tags": ("x",), "colour": "red", "id": 7, "a": 1, "b": 2}
    assert read(row) == Thing(7, Colour.RED, 3, ["x"], "thing")
    assert read({**row, "kind": "other"}).kind == "other"


def test_a_plain_mapper_and_a_single_column() -> None:
    @dataclass(frozen=True)
    class One:
        id: int

    assert mapper(One)({"id": 1, "extra": 2}) == One(1)


def test_a_missing_column_or_an_unknown_field_fails_loudly() -> None:
    with pytest.raises(TypeError, match="no field colour_"):
        mapper(Thing, colour_=Colour)
    with pytest.raises(KeyError):
        mapper(Thing, colour=Colour)({"id": 1, "colour": "red", "total": 3, "tags": []})


def test_a_table_takes_only_sql_identifiers() -> None:
    Table("api_keys", dict, insert="organization_id, name")
    with pytest.raises(ValueError, match="not an SQL identifier"):
        Table("api_keys; drop table users", dict)
    with pytest.raises(ValueError, match="not an SQL identifier"):
        Table("api_keys", dict, insert="name, role) values (1, 2) --")


async def test_a_table_refuses_an_unknown_lock_and_an_insert_it_has_no_columns_for() -> None:
    table = Table("api_keys", dict)
    conn: Any = None  # refused before the connection is used
    with pytest.raises(ValueError, match="not a row lock"):
        await table.get(conn, uuid4(), uuid4(), lock="update nowait")
    with pytest.raises(TypeError, match="names no insert columns"):
        await table.insert(conn, uuid4())


async def test_a_tables_statements_read_their_rows(db: Database) -> None:
    org = await create_org(db)
    tokens = Table("join_tokens", dict, insert="organization_id, name, prefix, token_hash, expires_at")
    async with db.transaction(org.id) as conn:
        made = await tokens.insert(conn, org.id, "ci", "gfj_x", b"\x01", datetime.now(UTC) + timedelta(hours=1))
        assert made["name"] == "ci" and made["revoked_at"] is None
        assert (await tokens.get(conn, org.id, made["id"], lock="update") or {})["id"] == made["id"]
        revoked = await tokens.revoke(conn, org.id, made["id"])
        assert revoked is not None and revoked["revoked_at"] is not None
        assert (await tokens.revoke(conn, org.id, made["id"]) or {})["revoked_at"] == revoked["revoked_at"]
        assert await tokens.get(conn, uuid4(), made["id"]) is None
        assert (await tokens.delete(conn, org.id, made["id"]) or {})["id"] == made["id"]
        assert await tokens.delete(conn, org.id, made["id"]) is None
