"""Row -> domain object, one way for every repo module: ``mapper(Cls, status=Status)``.

A domain dataclass whose fields are named as the table's columns is read from a row by name; a
field whose column needs converting (an enum, an array to a list) names the function, a column
that only some statements select is ``optional(default)``, and a field no column holds as it is
(a nested value, a renamed column) takes ``from_row(fn)``, given the whole row.

The field names are read once per class, the columns fetched by one ``itemgetter`` and the object
built with positional arguments: a mapper costs no more than the field-by-field constructor call
it replaces (docs/architecture.md, "Row -> domain object").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import itemgetter
from typing import Any, Protocol, TypeVar

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
