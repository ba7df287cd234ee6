"""Base classes and pagination shared by every resource."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from gpufleet.limits import BIGINT_MAX, INT32_MAX, TIMESTAMP_MAX, TIMESTAMP_MIN
from gpufleet.pagination import KeyPart, created_key, paginate

T = TypeVar("T")
R = TypeVar("R")


# The ranges of PostgreSQL's columns, checked once at the edge so that a value too large for its
# column is a 422 naming the field, never a driver error (a 500) deep in a transaction.
NonNegInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
NonNegBigInt = Annotated[int, Field(ge=0, le=BIGINT_MAX)]


def _storable_instant(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time zone, e.g. 2030-01-01T00:00:00Z")
    if not TIMESTAMP_MIN <= value <= TIMESTAMP_MAX:
        raise ValueError(f"must lie between {TIMESTAMP_MIN.date()} and {TIMESTAMP_MAX.date()} (UTC)")
    return value


Timestamp = Annotated[datetime, AfterValidator(_storable_instant)]
"""A timezone-aware instant PostgreSQL stores and the server can read back. Heartbeat sample times
are the exception: the service bounds them tighter, by the database clock and the allowed skew."""


def _finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: must be a finite number (JSON has no NaN or Infinity)")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}.{printable_key(k)}" if where else printable_key(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    _finite(value, "")  # depth already bounded by the request model's walk
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]
"""A free-form JSON object stored as jsonb: numbers must be finite (jsonb has no NaN or Infinity)."""

# Free-form JSON (settings, labels) deeper than this is refused: no legitimate document needs it,
# and walking an arbitrarily deep one would exhaust the interpreter's stack.
MAX_JSON_DEPTH = 32


class _TooDeep(ValueError):
    pass


# Set while a request model validates: the models nested in it need not walk their part again.
_body_checked: ContextVar[bool] = ContextVar("gpufleet_body_checked", default=False)
_SCALARS = frozenset({int, float, bool, type(None)})


def _clean_str(s: str) -> bool:
    if "\x00" in s:
        return False
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_items(values: Any, depth: int) -> bool:
    types = {type(v) for v in values}
    if types <= _SCALARS:
        return True  # the common case: arrays of numbers (metric samples)
    if types <= _SCALARS | {str}:
        # One scan of all the strings; joining adds no NUL and merges no surrogates.
        return _clean_str("".join([v for v in values if type(v) is str]))
    return all(_clean(v, depth) for v in values)


def _clean(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only storable text: fast and pathless (the message comes from ``_storable``).

    Raises ``_TooDeep`` past ``MAX_JSON_DEPTH`` levels, before the interpreter's stack runs out.
    """
    t = type(value)
    if t is str:
        return _clean_str(value)
    if t in _SCALARS:
        return True
    if depth >= MAX_JSON_DEPTH:
        raise _TooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if t is dict:
        return _clean_items(value, depth + 1) and _clean_items(value.values(), depth + 1)
    if t is list or t is tuple:
        return _clean_items(value, depth + 1)
    if isinstance(value, str):
        return _clean_str(str(value))
    if isinstance(value, dict):
        return all(_clean(k, depth + 1) and _clean(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_clean(v, depth + 1) for v in value)
    return True


def _storable(value: Any, where: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as a 422 naming the field.

    Checked first without paths (a request body is clean almost always, and a heartbeat holds
    hundreds of values); only a body that fails is walked again to name the field.
    """
    try:
        if _clean(value):
            return
    except _TooDeep as exc:
        raise ValueError(f"{where or 'body'}: {exc}") from None
    _name_unstorable(value, where)


def printable_key(key: object) -> str:
    """A key as it can be shown in a message: lone surrogates and controls escaped, length bounded."""
    text = str(key)
    if not text.isprintable() or not _clean_str(text):
        text = ascii(text)[1:-1]
    return text if len(text) <= 64 else text[:61] + "..."


def _name_unstorable(value: Any, where: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: not valid Unicode text") from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            name = f"{where}.{printable_key(k)}" if where else printable_key(k)
            _name_unstorable(k, name)
            _name_unstorable(v, name)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _name_unstorable(v, f"{where}[{i}]")


def vars_of(obj: Any) -> dict[str, object]:
    """The fields of a record (a domain dataclass, inherited fields included), to read into a wire
    model with what it adds."""
    names = _FIELD_NAMES.get(type(obj))
    if names is None:
        names = _FIELD_NAMES[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    return {name: getattr(obj, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class RequestModel(BaseModel):
    """A request body: unknown fields (including server-owned ones like id or status) are refused,
    and so is text PostgreSQL cannot store, wherever it hides (keys, nested values)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="wrap")
    @classmethod
    def _only_storable_text(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if _body_checked.get():
            return handler(data)  # nested in a request model that checked the whole body already
        _storable(data, "")
        token = _body_checked.set(True)
        try:
            return handler(data)
        finally:
            _body_checked.reset(token)


class ResponseModel(BaseModel):
    """A response body; clients ignore fields they do not know, so the server may add some."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class Page(ResponseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; absent on the last page."
    )

    @classmethod
    def of(
        cls,
        rows: Sequence[R],
        limit: int,
        read: Callable[[R], T],
        key: Callable[[R], Sequence[KeyPart]] = created_key,
    ) -> Self:
        """The page of ``limit + 1`` rows (``repo.keyset.page``), each item read from its row."""
        items, next_cursor = paginate(rows, limit, key)
        return cls(items=[read(r) for r in items], next_cursor=next_cursor)
