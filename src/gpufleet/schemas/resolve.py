"""Short ids on the wire: what a prefix of an id matches."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from gpufleet.schemas.common import ResponseModel


class IdMatchRead(ResponseModel):
    id: UUID
    label: str = Field(description="What the row is known by: a name, a GPU's host and model, an email.")


class ResolveRead(ResponseModel):
    kind: str
    prefix: str
    matches: list[IdMatchRead] = Field(description="In id order; exactly one means the prefix is unambiguous.")
    more: bool = Field(description="More rows match than are listed.")
