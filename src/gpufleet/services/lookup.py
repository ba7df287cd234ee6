"""Get-or-NotFound: the one way a use case turns a repo's ``None`` (no such row in the tenant) into
``NotFound``."""

from __future__ import annotations

from typing import TypeVar

from gpufleet.errors import NotFound

T = TypeVar("T")


def found(value: T | None, what: str) -> T:
    """``value``, or ``NotFound("<what> not found")`` when the repo found nothing."""
    if value is None:
        raise NotFound(f"{what} not found")
    return value
