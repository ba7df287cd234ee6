"""The one cursor codec and page cut every list uses: round trips, and refusals that name `cursor`."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from gpufleet.errors import InvalidInput
from gpufleet.pagination import decode_cursor, encode_cursor, paginate

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Row:
    created_at: datetime
    id: UUID


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_round_trips_each_key_shape() -> None:
    ident = uuid4()
    assert decode_cursor(encode_cursor((AT, ident))) == (AT, ident)
    assert decode_cursor(encode_cursor(("gpu-host-7", ident)), (str, UUID)) == ("gpu-host-7", ident)
    assert decode_cursor(encode_cursor((41,)), (int,)) == (41,)
    assert decode_cursor(encode_cursor(("prev", AT, ident)), (str, datetime, UUID)) == ("prev", AT, ident)
    assert decode_cursor(None) is None and decode_cursor("") is None
    cursor = encode_cursor((AT, ident))
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor  # safe in a query string as is


@pytest.mark.parametrize(
    ("cursor", "shape"),
    [
        ("garbage", (datetime, UUID)),
        ("!!!", (datetime, UUID)),
        (_raw({"a": 1}), (datetime, UUID)),
        (_raw([AT.isoformat(), str(uuid4())]), (datetime, UUID)),  # no shape
        (_raw(["tu", AT.isoformat()]), (datetime, UUID)),  # too short
        (_raw(["tu", AT.isoformat(), str(uuid4()), 1]), (datetime, UUID)),  # too long
        (_raw(["tu", "2026-11-30T12:00:00", str(uuid4())]), (datetime, UUID)),  # no time zone
        (_raw(["tu", "0001-01-01T00:00:00+00:00", str(uuid4())]), (datetime, UUID)),  # out of the readable range
        (_raw(["tu", AT.isoformat(), "not-a-uuid"]), (datetime, UUID)),
        (_raw(["i", True]), (int,)),
        (_raw(["i", 2**63]), (int,)),
        (_raw(["su", "a\u0000b", str(uuid4())]), (str, UUID)),
        (encode_cursor((AT, uuid4())), (str, UUID)),  # another list's cursor
        (encode_cursor((7,)), (datetime, UUID)),
    ],
)
def test_refuses_what_it_did_not_issue(cursor: str, shape: tuple[type, ...]) -> None:
    with pytest.raises(InvalidInput) as err:
        decode_cursor(cursor, shape)
    assert err.value.extra["field"] == "cursor" and "cursor" in str(err.value)


def test_paginate_cuts_limit_plus_one_rows() -> None:
    rows = [Row(AT, uuid4()) for _ in range(4)]
    items, nxt = paginate(rows, 3)
    assert items == rows[:3] and nxt is not None and decode_cursor(nxt) == (AT, rows[2].id)
    assert paginate(rows[:3], 3) == (rows[:3], None)
    assert paginate([], 3) == ([], None)
    items, nxt = paginate(rows, 1, key=lambda r: (r.id,))
    assert items == rows[:1] and decode_cursor(nxt, (UUID,)) == (rows[0].id,)


def test_keys_read_from_the_database_encode_like_their_python_types() -> None:
    from asyncpg.pgproto.pgproto import UUID as PgUUID  # what asyncpg returns for a uuid column

    ident = uuid4()
    assert decode_cursor(encode_cursor((AT, PgUUID(str(ident))))) == (AT, ident)
