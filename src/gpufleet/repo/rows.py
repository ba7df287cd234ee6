"""Row -> domain object, one way for every repo module: ``mapper(Cls, status=Status)``.

A domain dataclass whose fields are named as the table's columns is read from a row by name; a
field whose column needs converting (an enum, an array to a list) names the function, a column
that only some statements select is ``optional(default)``, and a field no column holds as it is
(a nested value, a renamed column) takes ``from_row(fn)``, given the whole row.

The field names are read once per class, the columns fetched by one ``itemgetter`` and the object
built with positional arguments: a mapper costs no more than the field-by-field constructor call
it replaces (docs/architecture.md, "Row -> domain object").

The statements every tenant table has, one row by its id or a plain insert, are written here once
(``Table``: ``insert``, ``get``, ``revoke``, ``delete``); anything more (a condition, a
conflict rule, a join) stays written out in its repo module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from gpufleet.db.pool import Connection as Conn

T = TypeVar("T")


class Row(Protocol):
    """What a mapper reads: an ``asyncpg.Record`` (a dict does too, in tests and benchmarks)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class from_row:
    """A field computed from the whole row rather than read from its own column."""

    fn: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class optional:
    """A column that some statements do not select: ``default`` when the row has no such column."""

    default: Any = None


def mapper(cls: type[T], /, **convert: Callable[[Any], Any] | from_row | optional) -> Callable[[Row], T]:
    """A function building ``cls`` from a row: each init field from its column of the same name,
    through ``convert[field]`` when given (``from_row``: from the whole row instead; ``optional``:
    a column the row may lack)."""
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = set(convert) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    columns: list[str] = []  # the fields read from their own column, in order
    converted: list[tuple[int, Callable[[Any], Any]]] = []  # (position among the columns, converter)
    computed: list[tuple[int, Callable[[Any], Any]]] = []  # (position among the fields, fn of the row)
    for i, name in enumerate(names):
        how = convert.get(name)
        if isinstance(how, optional):
            computed.append((i, _get(name, how.default)))
        elif isinstance(how, from_row):
            computed.append((i, how.fn))
        else:
            if how is not None:
                converted.append((len(columns), how))
            columns.append(name)
    get: Callable[[Row], tuple[Any, ...]] = itemgetter(*columns)
    if len(columns) == 1:  # itemgetter of one name returns the value, not a tuple
        one = itemgetter(columns[0])

        def get_one(row: Row) -> tuple[Any, ...]:
            return (one(row),)

        get = get_one

    if not convert:
        return lambda row: cls(*get(row))

    def build(row: Row) -> T:
        values = list(get(row))
        for i, fn in converted:
            values[i] = fn(values[i])
        for i, fn in computed:
            values.insert(i, fn(row))
        return cls(*values)

    return build


def _get(column: str, default: Any) -> Callable[[Any], Any]:
    return lambda row: row.get(column, default)


# -- statements built from table and column names ---------------------------------------------

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_LOCKS = (None, "update", "no key update", "share", "key share")


def assignments(columns: Iterable[str], allowed: frozenset[str], *, start: int) -> list[str]:
    """``column = $start``, ``column = $start+1`` ... for each of ``columns`` in order (a change's
    keys), each one of ``allowed``: the names are spliced into SQL, so any other is refused."""
    columns = list(columns)
    unknown = set(columns) - allowed
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    return [f"{column} = ${i}" for i, column in enumerate(columns, start=start)]


class Table(Generic[T]):
    """The plain one-row statements of a tenant table, each row read by ``of``.

    ``insert`` lists the columns a plain insert names (comma-separated, in the order of its values;
    the table's defaults fill the others). The table and column names are spliced into the SQL
    text, so they come only from the repo modules' own literals, never from a request: each must
    match ``[a-z_][a-z0-9_]*``. Every statement's text is built here, once, at import.
    """

    __slots__ = ("_delete", "_insert", "_of", "_revoke", "_select", "name")

    def __init__(self, name: str, of: Callable[[Row], T], *, insert: str = "") -> None:
        columns = [c.strip() for c in insert.split(",")] if insert else []
        for identifier in (name, *columns):
            if not _IDENTIFIER.fullmatch(identifier):
                raise ValueError(f"not an SQL identifier: {identifier!r}")
        by_id = "where organization_id = $1 and id = $2"
        values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        self.name = name
        self._of = of
        self._insert = f"insert into {name} ({', '.join(columns)}) values ({values}) returning *" if columns else ""
        self._select = {lock: f"select * from {name} {by_id}" + (f" for {lock}" if lock else "") for lock in _LOCKS}
        self._revoke = f"update {name} set revoked_at = coalesce(revoked_at, now()) {by_id} returning *"
        self._delete = f"delete from {name} {by_id} returning *"

    async def insert(self, conn: Conn, *values: Any) -> T:
        """``insert into <name> (<insert>) values ($1, ...) returning *``: the new row."""
        if not self._insert:
            raise TypeError(f"Table {self.name!r} names no insert columns")
        row = await conn.fetchrow(self._insert, *values)
        assert row is not None
        return self._of(row)

    async def get(self, conn: Conn, org_id: UUID, row_id: UUID, *, lock: str | None = None) -> T | None:
        """``select * from <name> where organization_id = $1 and id = $2 [for <lock>]``; ``lock``:
        ``update``, ``no key update``, ``share`` or ``key share``."""
        sql = self._select.get(lock)
        if sql is None:
            raise ValueError(f"not a row lock: {lock!r}")
        row = await conn.fetchrow(sql, org_id, row_id)
        return self._of(row) if row else None

    async def revoke(self, conn: Conn, org_id: UUID, row_id: UUID) -> T | None:
        """Set ``revoked_at`` once (revoking again keeps the first time); the row, or None when the
        organization has no such row."""
        row = await conn.fetchrow(self._revoke, org_id, row_id)
        return self._of(row) if row else None

    async def delete(self, conn: Conn, org_id: UUID, row_id: UUID) -> T | None:
        """``delete from <name> where organization_id = $1 and id = $2 returning *``: the row
        deleted, or None when there was none."""
        row = await conn.fetchrow(self._delete, org_id, row_id)
        return self._of(row) if row else None
