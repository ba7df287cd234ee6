"""Base classes and pagination shared by every resource."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpufleet.errors import InvalidInput

T = TypeVar("T")

DEFAULT_PAGE = 50
MAX_PAGE = 200


def _storable(value: Any, where: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as a 422 naming the field."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: not valid Unicode text") from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k, f"{where}.{k}" if where else str(k))
            _storable(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _storable(v, f"{where}[{i}]")


class RequestModel(BaseModel):
    """A request body: unknown fields (including server-owned ones like id or status) are refused,
    and so is text PostgreSQL cannot store, wherever it hides (keys, nested values)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _only_storable_text(cls, data: Any) -> Any:
        _storable(data, "")
        return data


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
