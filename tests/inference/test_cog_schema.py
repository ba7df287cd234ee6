"""cog_schema.derive: Replicate's schema read statically from cog.yaml and predict.py."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gpufleet.errors import InvalidInput
from gpufleet.inference.cog_schema import derive

YAML = 'build:\n  gpu: true\n  python_version: "3.11"\n  python_packages: ["numpy==1.26.4"]\npredict: "predict.py:Predictor"\n'


def _derive(code: str, yaml: str = YAML, **extra: bytes) -> Any:
    return derive({"cog.yaml": yaml.encode(), "predict.py": textwrap.dedent(code).encode(), **extra})


def _schemas(code: str) -> dict[str, Any]:
    return dict(_derive(code).openapi_schema["components"]["schemas"])


def test_typed_inputs_constraints_and_order() -> None:
    info = _derive(
        """
        from typing import Optional
        from cog import BasePredictor, Input, Path
        import cog

        class Predictor(BasePredictor):
            def setup(self): ...
            def predict(
                self,
                prompt: str = Input(description="The prompt", min_length=1, max_length=50, regex="^[a-z ]+$"),
                steps: int = Input(default=4, ge=1, le=50),
                scale: float = 7.5,
                fast: bool = False,
                image: Path = Input(description="An image"),
                doc: cog.File = None,
                tags: list[str] = Input(default=["a"], max_length=10),
                seed: Optional[int] = Input(default=None, ge=0),
                old: str = Input(default="x", deprecated=True),
            ) -> str:
                return prompt
        """
    )
    assert info.gpu is True and info.python_version == "3.11" and info.python_packages == ["numpy==1.26.4"]
    assert info.predict_ref == "predict.py:Predictor" and not info.is_generator
    doc = info.openapi_schema
    assert doc["openapi"] == "3.0.2"
    inp = doc["components"]["schemas"]["Input"]
    assert inp["required"] == ["prompt", "image"]
    p = inp["properties"]
    assert list(p) == ["prompt", "steps", "scale", "fast", "image", "doc", "tags", "seed", "old"]
    assert [p[k]["x-order"] for k in p] == list(range(9))
    assert p["prompt"] == {
        "title": "Prompt",
        "type": "string",
        "x-order": 0,
        "minLength": 1,
        "maxLength": 50,
        "pattern": "^[a-z ]+$",
        "description": "The prompt",
    }
    assert p["steps"] | {} == {
        "title": "Steps",
        "type": "integer",
        "x-order": 1,
        "minimum": 1,
        "maximum": 50,
        "default": 4,
    }
    assert p["scale"]["type"] == "number" and p["scale"]["default"] == 7.5
    assert p["fast"]["type"] == "boolean" and p["fast"]["default"] is False
    assert p["image"]["format"] == "uri" and "default" not in p["image"]
    assert p["doc"]["format"] == "uri" and p["doc"]["nullable"] is True
    assert p["tags"] == {
        "title": "Tags",
        "type": "array",
        "items": {"type": "string"},
        "x-order": 6,
        "maxLength": 10,
        "default": ["a"],
    }
    assert p["seed"]["nullable"] is True and p["seed"]["minimum"] == 0 and "default" not in p["seed"]
    assert p["old"]["deprecated"] is True
    assert doc["components"]["schemas"]["Output"] == {"title": "Output", "type": "string"}
    assert doc["paths"]["/predictions"]["post"]["requestBody"]


def test_choices_become_an_enum_schema_like_cog() -> None:
    s = _schemas(
        """
        from cog import BasePredictor, Input
        class Predictor(BasePredictor):
            def predict(self, mode: str = Input(default="fast", choices=["fast", "slow"]), n: int = Input(choices=[1, 2])) -> str: ...
        """
    )
    assert s["Input"]["properties"]["mode"] == {
        "allOf": [{"$ref": "#/components/schemas/mode"}],
        "x-order": 0,
        "default": "fast",
    }
    assert s["mode"] == {"title": "mode", "description": "An enumeration.", "enum": ["fast", "slow"], "type": "string"}
    assert s["n"]["type"] == "integer" and s["Input"]["required"] == ["n"]


@pytest.mark.parametrize(
    ("annotation", "output", "generator"),
    [
        ("int", {"type": "integer"}, False),
        ("float", {"type": "number"}, False),
        ("bool", {"type": "boolean"}, False),
        ("dict", {"type": "object"}, False),
        ("Any", {"type": "object"}, False),
        ("Path", {"type": "string", "format": "uri"}, False),
        ("list[float]", {"type": "array", "items": {"type": "number"}}, False),
        ("List[Path]", {"type": "array", "items": {"type": "string", "format": "uri"}}, False),
        ("Iterator[str]", {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}, True),
        (
            "ConcatenateIterator[str]",
            {
                "type": "array",
                "items": {"type": "string"},
                "x-cog-array-type": "iterator",
                "x-cog-array-display": "concatenate",
            },
            True,
        ),
        (
            "typing.Iterator[Path]",
            {"type": "array", "items": {"type": "string", "format": "uri"}, "x-cog-array-type": "iterator"},
            True,
        ),
        ('"str"', {"type": "string"}, False),
    ],
)
def test_outputs(annotation: str, output: dict[str, Any], generator: bool) -> None:
    info = _derive(
        f"""
        import typing
        from typing import Any, Iterator, List
        from cog import BasePredictor, ConcatenateIterator, Path
        class Predictor(BasePredictor):
            def predict(self) -> {annotation}: ...
        """
    )
    assert info.openapi_schema["components"]["schemas"]["Output"] == {"title": "Output", **output}
    assert info.is_generator is generator


def test_yield_in_the_body_makes_a_generator_and_nested_yields_do_not() -> None:
    info = _derive(
        """
        from cog import BasePredictor
        class Predictor(BasePredictor):
            def predict(self, n: int) -> str:
                for i in range(n):
                    yield str(i)
        """
    )
    assert (
        info.is_generator and info.openapi_schema["components"]["schemas"]["Output"]["x-cog-array-type"] == "iterator"
    )
    info = _derive(
        """
        from cog import BasePredictor
        class Predictor(BasePredictor):
            def predict(self, n: int) -> str:
                def inner():
                    yield 1
                return "x"
        """
    )
    assert not info.is_generator


def test_output_object_run_method_function_predictor_and_inheritance() -> None:
    info = _derive(
        """
        from typing import Optional
        from cog import BaseModel, BaseRunner, Path
        class Output(BaseModel):
            text: str
            score: Optional[float]
            files: list[Path] = []
        class Base(BaseRunner):
            def run(self, x: int = 1) -> Output: ...
        class Predictor(Base):
            pass
        """
    )
    out = info.openapi_schema["components"]["schemas"]["Output"]
    assert out["type"] == "object" and out["required"] == ["text"]
    assert out["properties"]["score"] == {"type": "number", "nullable": True, "title": "Score"}
    assert out["properties"]["files"]["items"]["format"] == "uri"
    info = _derive("def predict(text: str) -> str:\n    return text\n", yaml='predict: "predict.py:predict"\n')
    assert list(info.openapi_schema["components"]["schemas"]["Input"]["properties"]) == ["text"]
    assert info.gpu is False and info.python_packages == [] and info.python_version is None


def test_cog_yaml_options() -> None:
    info = _derive(
        "from cog import BasePredictor\nclass P(BasePredictor):\n    async def predict(self) -> str: ...\n",
        yaml="build:\n  python_version: 3.12\n  python_requirements: requirements.txt\n"
        'predict: "predict.py:P"\nconcurrency:\n  max: 8\n',
        **{"requirements.txt": b"# pinned\ntorch==2.3.0\n\ncog==0.16.0  # the runtime\n"},
    )
    assert info.python_packages == ["torch==2.3.0", "cog==0.16.0"]
    assert info.cog_version == "0.16.0" and info.concurrency == 8 and info.python_version == "3.12"
    assert info.cog_config["concurrency"] == {"max": 8}


PRED = "from cog import BasePredictor, Input\nclass Predictor(BasePredictor):\n    def predict(self, {}) -> str: ...\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"predict.py": b""}, "cog.yaml: missing"),
        ({"cog.yaml": b"build: [", "predict.py": b""}, "cog.yaml: not valid YAML"),
        ({"cog.yaml": b"- a\n"}, "cog.yaml: expected a mapping"),
        ({"cog.yaml": b"build: {}\n"}, "`predict` must name the predictor"),
        ({"cog.yaml": b'predict: "other.py:Predictor"\n'}, "other.py: missing"),
        ({"cog.yaml": b'predict: "predict.py:Predictor"\nbuild:\n  gpu: maybe\n', "predict.py": b""}, "build.gpu"),
        (
            {"cog.yaml": b'predict: "predict.py:P"\nbuild:\n  python_packages: numpy\n', "predict.py": b""},
            "python_packages",
        ),
        (
            {"cog.yaml": b'predict: "predict.py:P"\nbuild:\n  python_version: "2.7"\n', "predict.py": b""},
            "python_version",
        ),
        ({"cog.yaml": b'predict: "predict.py:P"\nconcurrency:\n  max: 0\n', "predict.py": b""}, "concurrency.max"),
        (
            {"cog.yaml": b'predict: "predict.py:Predictor"\n', "predict.py": b"def broken(:\n"},
            "predict.py line 1: syntax error",
        ),
        (
            {"cog.yaml": b'predict: "predict.py:Predictor"\n', "predict.py": b"x = 1\n"},
            "no class or function named 'Predictor'",
        ),
        (
            {"cog.yaml": b'predict: "predict.py:Predictor"\n', "predict.py": b"class Predictor:\n    pass\n"},
            "has no predict() method",
        ),
    ],
)
def test_bad_configs_name_the_problem(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        derive(files)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("x", "parameter 'x' of predict\\(\\) has no type annotation"),
        ("x: int = Input(default=compute())", "parameter 'x': the default must be a literal"),
        ("x: int = Input(ge=LIMIT)", "parameter 'x': ge must be a literal"),
        ("x: int = Input(bogus=1)", "parameter 'x': Input\\(\\) has no argument 'bogus'"),
        ("x: int = Input(min_length=1)", "parameter 'x': min_length does not apply"),
        ("x: str = Input(ge=1)", "parameter 'x': ge does not apply"),
        ("x: str = Input(regex='(')", "parameter 'x': regex '\\(' does not compile"),
        ("x: int = 'a'", "parameter 'x': the default 'a' is not a int"),
        ("x: str = Input(default='c', choices=['a', 'b'])", "parameter 'x': the default 'c' is not one of the choices"),
        ("x: str = Input(choices=['a', 1])", "parameter 'x': every choice must be a str"),
        ("x: dict", "parameter 'x': an input cannot be dict"),
        ("x: pathlib.Path", "parameter 'x': use cog.Path"),
        ("x: int | str", "parameter 'x': a union of several types"),
        ("x: tuple[int]", "parameter 'x': unsupported type tuple\\[int\\]"),
        ("*args: int", "must not take \\*args"),
    ],
)
def test_bad_parameters_name_the_parameter(params: str, message: str) -> None:
    code = "import pathlib\n" + PRED.format(params)
    with pytest.raises(InvalidInput, match=message):
        derive({"cog.yaml": b'predict: "predict.py:Predictor"\n', "predict.py": code.encode()})


def test_missing_return_annotation() -> None:
    with pytest.raises(InvalidInput, match="return type annotation"):
        _derive("from cog import BasePredictor\nclass Predictor(BasePredictor):\n    def predict(self): ...\n")


def test_a_none_default_makes_any_input_optional_as_older_cog_did() -> None:
    """Cog 0.23 would call `x: str = Input(default=None)` required; predictors written for earlier
    Cog (pydantic) rely on it being optional, and they must run unchanged."""
    s = _schemas(
        "from cog import BasePredictor, Input, Path\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, x: str = Input(default=None), p: Path = None) -> str: ...\n"
    )
    assert "required" not in s["Input"]
    assert s["Input"]["properties"]["x"]["nullable"] is True and s["Input"]["properties"]["p"]["nullable"] is True
