"""validate_input: a prediction's input against its version's schema, 422 naming the field."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gpufleet.errors import InvalidInput
from gpufleet.inference.cog_schema import derive
from gpufleet.inference.validate import validate_input

CODE = """
from typing import Optional
from cog import BasePredictor, Input, Path

class Predictor(BasePredictor):
    def predict(
        self,
        text: str = Input(max_length=5, regex="^[a-z]"),
        repeat: int = Input(default=1, ge=1, le=3),
        scale: float = Input(default=0.5, ge=0, le=1),
        loud: bool = False,
        mode: str = Input(default="a", choices=["a", "b"]),
        image: Optional[Path] = None,
        tags: list[str] = Input(default=[], max_length=3),
        note: Optional[str] = Input(default=None),
    ) -> str: ...
"""
SCHEMA: dict[str, Any] = derive(
    {"cog.yaml": b'predict: "predict.py:Predictor"\n', "predict.py": textwrap.dedent(CODE).encode()}
).openapi_schema


def test_defaults_are_filled() -> None:
    assert validate_input(SCHEMA, {"text": "hi"}) == {
        "text": "hi",
        "repeat": 1,
        "scale": 0.5,
        "loud": False,
        "mode": "a",
        "image": None,
        "tags": [],
        "note": None,
    }


def test_lax_coercions_like_cog() -> None:
    out = validate_input(SCHEMA, {"text": "hi", "repeat": "2", "scale": 1, "loud": "true", "image": "data:,x"})
    assert out["repeat"] == 2 and out["scale"] == 1.0 and out["loud"] is True and out["image"] == "data:,x"
    assert validate_input(SCHEMA, {"text": "hi", "repeat": 3.0})["repeat"] == 3


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "input.text", "required"),
        ({"text": None}, "input.text", "null is not allowed"),
        ({"text": 5}, "input.text", "expected a string"),
        ({"text": "abcdef"}, "input.text", "at most 5 characters"),
        ({"text": "Hi"}, "input.text", "does not match the pattern"),
        ({"text": "hi", "repeat": 0}, "input.repeat", ">= 1"),
        ({"text": "hi", "repeat": 4}, "input.repeat", "<= 3"),
        ({"text": "hi", "repeat": True}, "input.repeat", "expected an integer, got a boolean"),
        ({"text": "hi", "repeat": 1.5}, "input.repeat", "expected an integer"),
        ({"text": "hi", "scale": "x"}, "input.scale", "expected a number"),
        ({"text": "hi", "scale": 1.5}, "input.scale", "<= 1"),
        ({"text": "hi", "loud": "maybe"}, "input.loud", "true or false"),
        ({"text": "hi", "mode": "c"}, "input.mode", "one of 'a', 'b'"),
        ({"text": "hi", "image": "/etc/passwd"}, "input.image", "expected a URL"),
        ({"text": "hi", "tags": "a"}, "input.tags", "expected a list"),
        ({"text": "hi", "tags": ["a", "bcde"]}, "input.tags[1]", "at most 3"),
        ({"text": "hi", "typo": 1}, "input.typo", "not an input of this model"),
    ],
)
def test_errors_name_the_field(payload: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        validate_input(SCHEMA, payload)
    assert info.value.extra["field"] == field
    assert str(info.value).startswith(field + ":")


def test_not_an_object() -> None:
    with pytest.raises(InvalidInput, match="input: expected an object") as info:
        validate_input(SCHEMA, ["text"])
    assert info.value.extra["field"] == "input"


def test_empty_schema_takes_no_input() -> None:
    assert validate_input({}, {}) == {}
    assert validate_input({}, None) == {}
    with pytest.raises(InvalidInput, match=r"input\.x: not an input"):
        validate_input({}, {"x": 1})
