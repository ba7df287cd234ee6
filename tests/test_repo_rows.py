"""repo/rows.mapper: the one way a row becomes a domain object."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pytest

from gpufleet.repo.rows import from_row, mapper, optional


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
