"""Base classes and pagination shared by every resource."""

from __future__ import annotations

import base64
import binascii
import json
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from gpufleet.errors import InvalidInput

T = TypeVar("T")

DEFAULT_PAGE = 50
MAX_PAGE = 200


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


def _clean_items(values: Any) -> bool:
    types = {type(v) for v in values}
    if types <= _SCALARS:
        return True  # the common case: arrays of numbers (metric samples)
    if types <= _SCALARS | {str}:
        # One scan of all the strings; joining adds no NUL and merges no surrogates.
        return _clean_str("".join([v for v in values if type(v) is str]))
    return all(_clean(v) for v in values)


def _clean(value: Any) -> bool:
    """Whether ``value`` holds only storable text: fast and pathless (the message comes from ``_storable``)."""
    t = type(value)
    if t is str:
        return _clean_str(value)
    if t is dict:
        return _clean_items(value) and _clean_items(value.values())
    if t is list or t is tuple:
        return _clean_items(value)
    if t in _SCALARS:
        return True
    if isinstance(value, str):
        return _clean_str(str(value))
    if isinstance(value, dict):
        return all(_clean(k) and _clean(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_clean(v) for v in value)
    return True


def _storable(value: Any, where: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as a 422 naming the field.

    Checked first without paths (a request body is clean almost always, and a heartbeat holds
    hundreds of values); only a body that fails is walked again to name the field.
    """
    if _clean(value):
        return
    _name_unstorable(value, where)


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
            _name_unstorable(k, f"{where}.{k}" if where else str(k))
            _name_unstorable(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _name_unstorable(v, f"{where}[{i}]")


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


def encode_cursor(created_at: datetime, id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, ident = json.loads(raw)
        return datetime.fromisoformat(ts), UUID(ident)
    except (binascii.Error, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by this API", field="cursor") from exc
