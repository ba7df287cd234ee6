"""A prediction's input checked against its version's schema before anything is queued.

Mirrors Cog's own check (so a prediction refused here would have failed in the worker): types
with Cog's lax coercions (``"3"`` for an int, ``3`` for a float), ``ge``/``le``, lengths,
``regex`` (anchored at the start, like ``re.match``), choices, defaults filled in. One
difference: an unknown key is refused (Cog only warns), so a typo is not silently dropped.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gpufleet.errors import InvalidInput

URI_SCHEMES = ("http://", "https://", "data:")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_MISSING = object()


def _fail(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"input.{name}: {message}", field=f"input.{name}")


def input_properties(openapi_schema: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(each input's schema with ``allOf`` enum references resolved, the required names)."""
    schemas = (openapi_schema.get("components") or {}).get("schemas") or {}
    spec = schemas.get("Input") or {}
    props: dict[str, dict[str, Any]] = {}
    for name, prop in (spec.get("properties") or {}).items():
        resolved = dict(prop)
        for part in prop.get("allOf") or []:
            ref = part.get("$ref", "") if isinstance(part, dict) else ""
            target = schemas.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/components/schemas/") else None
            if target:
                resolved.setdefault("type", target.get("type"))
                resolved["enum"] = target.get("enum", [])
        props[name] = resolved
    return props, list(spec.get("required") or [])


def _coerce(name: str, value: Any, schema: dict[str, Any]) -> Any:
    t = schema.get("type")
    if t == "string":
        if not isinstance(value, str):
            raise _fail(name, f"expected a string, got {_kind(value)}")
        if schema.get("format") == "uri" and not value.startswith(URI_SCHEMES):
            raise _fail(name, "expected a URL (https://..., a gpufleet file URL or a data: URI)")
        return value
    if t == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(name, f"expected true or false, got {_kind(value)}")
    if t == "integer":
        if isinstance(value, bool):
            raise _fail(name, "expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):
            return int(value)
        raise _fail(name, f"expected an integer, got {_kind(value)}")
    if t == "number":
        if isinstance(value, bool):
            raise _fail(name, "expected a number, got a boolean")
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _fail(name, f"expected a number, got {_kind(value)}") from None
        else:
            raise _fail(name, f"expected a number, got {_kind(value)}")
        if not math.isfinite(number):
            raise _fail(name, "expected a finite number")
        return number
    if t == "array":
        if not isinstance(value, list):
            raise _fail(name, f"expected a list, got {_kind(value)}")
        items = schema.get("items") or {}
        return [_coerce(f"{name}[{i}]", v, items) for i, v in enumerate(value)]
    return value  # "object" or no type: anything JSON


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _constraints(name: str, value: Any, schema: dict[str, Any]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise _fail(name, f"must be >= {_number(schema['minimum'])}")
    if "maximum" in schema and value > schema["maximum"]:
        raise _fail(name, f"must be <= {_number(schema['maximum'])}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise _fail(name, f"must be at least {schema['minLength']} characters long")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise _fail(name, f"must be at most {schema['maxLength']} characters long")
    if "pattern" in schema and re.match(schema["pattern"], value) is None:
        raise _fail(name, f"does not match the pattern {schema['pattern']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise _fail(name, f"must be one of {', '.join(repr(c) for c in schema['enum'])}")


def validate_input(openapi_schema: dict[str, Any], payload: object) -> dict[str, Any]:
    """The input with every value checked and coerced and the defaults filled in; raises
    InvalidInput naming ``input.<field>`` at the first problem."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidInput(f"input: expected an object, got {_kind(payload)}", field="input")
    props, required = input_properties(openapi_schema)
    for key in payload:
        if key not in props:
            known = ", ".join(props) or "none"
            raise _fail(str(key), f"not an input of this model (its inputs: {known})")
    out: dict[str, Any] = {}
    for name, schema in props.items():
        value = payload.get(name, _MISSING)
        if value is _MISSING:
            if "default" in schema:
                out[name] = schema["default"]
                continue
            if name in required:
                raise _fail(name, "required")
            out[name] = None
            continue
        if value is None:
            if name in required and not schema.get("nullable"):
                raise _fail(name, "required, and null is not allowed")
            out[name] = None
            continue
        value = _coerce(name, value, schema)
        # Cog applies a list input's constraints to each of its items
        checks: dict[str, Any] = {
            k: schema[k] for k in ("minimum", "maximum", "minLength", "maxLength", "pattern", "enum") if k in schema
        }
        if schema.get("type") == "array":
            for i, item in enumerate(value):
                _constraints(f"{name}[{i}]", item, checks)
        else:
            _constraints(name, value, checks)
        out[name] = value
    return out
