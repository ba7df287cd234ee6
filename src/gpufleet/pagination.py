"""Keyset pagination: one opaque cursor codec and one way to cut a page.

A list is read in the order of a key (``(created_at, id)`` newest first for most of them). The
repository fetches ``limit + 1`` rows past the cursor's key (``repo.keyset.page``); ``paginate``
keeps ``limit`` of them and, when there was one more, encodes the last one's key as the next
cursor. A cursor is urlsafe base64 of a small JSON list: the key's shape (a letter a part), then
its values; clients treat it as opaque. One that does not decode to the expected shape (garbage,
or another list's cursor) is a 422 naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from gpufleet.errors import InvalidInput
from gpufleet.limits import BIGINT_MAX, TIMESTAMP_MAX, TIMESTAMP_MIN

T = TypeVar("T")
KeyPart = datetime | UUID | str | int
Key = tuple[Any, ...]
CREATED = (datetime, UUID)
"""The usual key's shape: ``(created_at, id)``."""


def created_key(row: Any) -> Key:
    """``(created_at, id)`` of a row: the key of most lists."""
    return (row.created_at, row.id)


_LETTERS: dict[type, str] = {datetime: "t", UUID: "u", str: "s", int: "i"}


def _letters(shape: Sequence[type]) -> str:
    return "".join(_LETTERS[kind] for kind in shape)


def encode_cursor(key: Sequence[KeyPart]) -> str:
    shape = _letters([next(k for k in _LETTERS if isinstance(v, k)) for v in key])
    parts = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v for v in key]
    return base64.urlsafe_b64encode(json.dumps([shape, *parts], separators=(",", ":")).encode()).decode().rstrip("=")


def _part(kind: type, value: Any) -> KeyPart:
    if kind is datetime:
        at = datetime.fromisoformat(value)
        if at.tzinfo is None or not TIMESTAMP_MIN <= at <= TIMESTAMP_MAX:
            raise ValueError("not an instant this API issued")
        return at
    if kind is UUID:
        return UUID(value)
    if kind is int:
        if type(value) is not int or not -BIGINT_MAX <= value <= BIGINT_MAX:
            raise ValueError("not a whole number")
        return value
    if type(value) is not str or "\x00" in value:
        raise ValueError("not text")
    value.encode()  # lone surrogates cannot be compared by PostgreSQL
    return value


def decode_cursor(cursor: str | None, shape: Sequence[type] = CREATED) -> Key | None:
    """The key a cursor carries, each part of the type ``shape`` names; ``None`` without a cursor."""
    if not cursor:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or parts[:1] != [_letters(shape)]:
            raise ValueError("another shape")
        return tuple(_part(kind, value) for kind, value in zip(shape, parts[1:], strict=True))
    except (binascii.Error, ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by this API; start again without it", field="cursor") from exc


def paginate(
    rows: Sequence[T], limit: int, key: Callable[[T], Sequence[KeyPart]] = created_key
) -> tuple[list[T], str | None]:
    """``limit + 1`` rows (or fewer) in, the page's items and the cursor to the next page out."""
    items = list(rows[:limit])
    return items, encode_cursor(key(items[-1])) if len(rows) > limit and items else None
