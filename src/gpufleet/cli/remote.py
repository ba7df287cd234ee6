"""Talking to a gpufleet server from the CLI: the client, one-line errors, tables or --json."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import typer
from pydantic import BaseModel
from rich.table import Table

from gpufleet.cli import config
from gpufleet.cli.common import console, emit_json, fail
from gpufleet.client import ApiError, Client

JsonOpt = typer.Option(False, "--json", help="Print JSON for programs.")


@contextlib.contextmanager
def client(*, need_key: bool = True) -> Iterator[Client]:
    cfg = config.load()
    if need_key and not cfg.api_key:
        fail(f"no API key: set GPUFLEET_API_KEY or run `gpufleet up` once to create {config.config_path()}")
    try:
        with Client(cfg.url, cfg.api_key) as c:
            yield c
    except ApiError as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        fail(f"cannot reach gpufleet at {cfg.url}: {exc}")


def dump(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    return obj


def show(obj: Any, as_json: bool, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print ``obj`` (a model or a list of models) as JSON or as a table of ``columns``."""
    if as_json:
        emit_json(dump(obj))
        return
    rows = obj if isinstance(obj, list) else [obj]
    data = [dump(r) for r in rows]
    cols = list(columns or (data[0].keys() if data else []))
    table = Table(title=title)
    for c in cols:
        table.add_column(c.replace("_", " ").title())
    for d in data:
        table.add_row(*["" if d.get(c) is None else str(d.get(c)) for c in cols])
    console.print(table)
