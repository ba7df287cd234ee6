"""examples/models/*: each parses with cog_schema exactly as Cog itself reads it, and runs offline."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cog import _inspector

from gpufleet.inference import archive, cog_schema
from gpufleet.inference.validate import input_properties, validate_input

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "cog.yaml").exists())


def _derive(name: str) -> cog_schema.VersionInfo:
    files = archive.read_files(archive.pack(EXAMPLES / name), suffixes=(".py", ".yaml", ".yml", ".txt"))
    return cog_schema.derive(files)


def _module(name: str) -> ModuleType:
    module_name = f"gpufleet_example_{name.replace('-', '_')}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / name / "predict.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _cog_info(name: str) -> Any:
    """What Cog's own inspector (it imports the module) makes of the predictor."""
    module = _module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Cog 0.23 prefers BaseRunner.run()
        return _inspector.create_predictor(module.__name__, "Predictor")


def test_the_examples_are_there() -> None:
    assert NAMES == ["echo", "embeddings", "matmul", "stream-text", "text-generation"]


RICH = """
from typing import Iterator, Optional
import cog
from cog import BasePredictor, Input, Path

class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="p", min_length=1, max_length=50, regex="^[a-z]"),
        steps: int = Input(default=4, ge=1, le=50),
        scale: float = 7.5,
        fast: bool = False,
        image: Path = Input(description="An image"),
        doc: Optional[cog.File] = None,
        tags: list[str] = Input(default=["a"]),
        sizes: list[int] = Input(default=[1, 2], ge=0),
        seed: Optional[int] = Input(default=None, ge=0),
        level: int = Input(default=2, choices=[1, 2, 3]),
        key: Optional[cog.Secret] = Input(default=None),
    ) -> Iterator[Path]:
        yield image
"""


def test_a_rich_signature_matches_cogs_own_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rich_predictor.py").write_text(RICH)
    monkeypatch.syspath_prepend(str(tmp_path))
    info = cog_schema.derive({"cog.yaml": b'predict: "predict.py:Predictor"', "predict.py": RICH.encode()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cog = _inspector.create_predictor("rich_predictor", "Predictor")
    _compare(info, cog)


@pytest.mark.parametrize("name", NAMES)
def test_static_schema_matches_cogs_own_reading(name: str) -> None:
    _compare(_derive(name), _cog_info(name))


def _compare(info: cog_schema.VersionInfo, cog: Any) -> None:
    schemas = info.openapi_schema["components"]["schemas"]
    assert schemas["Output"] == cog.output.json_type()
    assert info.is_generator == (cog.output.kind.name in ("ITERATOR", "CONCAT_ITERATOR"))
    props, required = input_properties(info.openapi_schema)
    assert list(props) == sorted(cog.inputs, key=lambda n: cog.inputs[n].order)
    for field_name, field in cog.inputs.items():
        prop = props[field_name]
        assert prop["x-order"] == field.order
        shape = ("type", "format", "items", "writeOnly", "x-cog-secret")
        assert {k: v for k, v in prop.items() if k in shape} == field.type.json_type()
        assert prop.get("default") == field.default
        if field.type.repetition.name in ("OPTIONAL", "OPTIONAL_REPEATED"):
            assert prop.get("nullable") is True
        assert prop.get("minimum") == field.ge and prop.get("maximum") == field.le
        assert prop.get("minLength") == field.min_length and prop.get("maxLength") == field.max_length
        assert prop.get("pattern") == field.regex and prop.get("enum") == field.choices
        assert prop.get("description") == field.description
        assert (field_name in required) == (field.default is None and field.type.repetition.name == "REQUIRED")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("echo", {"text": "Hi", "repeat": "2", "case": "upper"}),
        ("matmul", {"size": 4, "dtype": "float64"}),
        ("stream-text", {"delay": 0}),
        ("text-generation", {"max_tokens": "5", "temperature": 0}),
    ],
)
def test_validation_agrees_with_cogs_check(name: str, payload: dict[str, Any]) -> None:
    cog = _cog_info(name)
    assert validate_input(_derive(name).openapi_schema, payload) == _inspector.check_input(cog.inputs, payload)


def _run(name: str, payload: dict[str, Any]) -> Any:
    predictor = _module(name).Predictor()
    predictor.setup()
    out = predictor.predict(**validate_input(_derive(name).openapi_schema, payload))
    return "".join(out) if isinstance(out, Iterator) else out


def test_echo_runs() -> None:
    assert _run("echo", {"text": "Hi", "repeat": 3, "case": "upper"}) == "HI HI HI"
    assert _run("echo", {"text": "abc", "reverse": True, "separator": "-", "repeat": 2}) == "cba-cba"


def test_matmul_runs_and_reports_its_backend() -> None:
    out = _run("matmul", {"size": 8, "iterations": 2})
    assert out["backend"] in ("torch", "numpy", "python") and out["device"] in ("cpu", "cuda")
    assert out["size"] == 8 and out["seconds_per_iteration"] >= 0 and out["checksum"] > 0


def test_stream_text_yields_tokens() -> None:
    predictor = _module("stream-text").Predictor()
    tokens = list(predictor.predict(text="a b c", delay=0, repeat=2))
    assert tokens == ["a ", "b ", "c ", "a ", "b ", "c"]


def test_text_generation_is_deterministic() -> None:
    first = _run("text-generation", {"prompt": "the model", "max_tokens": 12, "seed": 7})
    assert first == _run("text-generation", {"prompt": "the model", "max_tokens": 12, "seed": 7})
    assert len(first.split()) == 12
    assert first != _run("text-generation", {"prompt": "the model", "max_tokens": 12, "seed": 8})
    greedy = _run("text-generation", {"prompt": "a", "max_tokens": 3, "temperature": 0})
    assert greedy == " model again ."
