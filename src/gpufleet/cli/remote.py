"""Talking to a gpufleet server from the CLI: the client, short ids, one-line errors, tables or --json."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

import httpx
import typer
from pydantic import BaseModel
from rich.table import Table

from gpufleet.cli import config
from gpufleet.cli.common import console, emit_json, fail, usage
from gpufleet.sdk import Client, GpufleetError

JsonOpt = typer.Option(False, "--json", help="Print JSON for programs (errors too, on stderr).")
WideOpt = typer.Option(False, "--wide", help="Full ids in tables (default: their first 8 characters).")
SHORT = 8  # hex characters of an id shown in tables; any unique start of 4 or more is accepted back
ID_WIDTH = 36  # a whole UUID, as --wide shows it


def id_arg(what: str) -> Any:
    return typer.Argument(..., metavar="ID", help=f"The {what}'s id, or any unique start of it (4+ characters).")


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _overrides() -> tuple[str | None, str | None]:
    """``--url`` / ``--api-key`` given before the command (``gpufleet --url U jobs list``)."""
    try:
        from typer._click.globals import get_current_context  # typer >= 0.2x carries its own click
    except ImportError:  # pragma: no cover
        from click import get_current_context  # type: ignore[no-redef]
    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return (obj.get("url"), obj.get("api_key")) if isinstance(obj, dict) else (None, None)


@contextlib.contextmanager
def client(*, need_key: bool = True) -> Iterator[Client]:
    url, key = _overrides()
    try:
        cfg = config.load(url, key)
    except ValueError as exc:
        fail(str(exc))
    if need_key and not cfg.api_key:
        fail(
            "no API key: pass --api-key, set GPUFLEET_API_KEY, or run `gpufleet up` once to create "
            f"{config.config_path()}"
        )
    try:
        with Client(cfg.url, cfg.api_key or "") as c:
            yield c
    except GpufleetError as exc:
        fail(str(exc), status=exc.status)
    except httpx.TransportError as exc:
        fail(f"cannot reach gpufleet at {cfg.url}: {exc}")


KIND_WORDS = {"job": "job", "host": "host", "gpu": "GPU", "key": "API key", "join_token": "join token",
              "invite": "invite", "quota": "quota"}  # fmt: skip


def resolve(c: Client, kind: str, text: str) -> UUID:
    """The id ``text`` names: a full id as it is, else the one id of ``kind`` it starts (asked of the server)."""
    full = _full(text)
    if full is not None:
        return full
    _check_prefix(text)
    found = c.resolve(kind, text)
    word = KIND_WORDS.get(kind, kind)
    return _one_of(text, word, [(m.id, m.label) for m in found.matches], found.more)


def resolve_local(text: str, word: str, candidates: Callable[[], Iterable[tuple[UUID, str]]]) -> UUID:
    """As ``resolve`` among the few ids ``candidates()`` lists (organizations, members, webhooks),
    asked for only when ``text`` is a prefix: a whole id needs no listing."""
    full = _full(text)
    if full is not None:
        return full
    digits = _check_prefix(text)
    matches = [(i, label) for i, label in candidates() if i.hex.startswith(digits)]
    return _one_of(text, word, matches, False)


def _check_prefix(text: str) -> str:
    """The hex digits of an id's start; a wrong command line (exit 2) when ``text`` cannot be one."""
    digits = text.strip().lower().replace("-", "")
    if not re.fullmatch(r"[0-9a-f]{4,32}", digits):
        usage(f"{text!r} is not an id: give 4 to 32 hex digits of one (dashes allowed)")
    return digits


def _full(text: str) -> UUID | None:
    t = text.strip().lower()
    return UUID(t) if _UUID.match(t) or re.fullmatch(r"[0-9a-f]{32}", t) else None


def _one_of(text: str, word: str, matches: list[tuple[UUID, str]], more: bool) -> UUID:
    if len(matches) == 1:
        return matches[0][0]
    if not matches:
        fail(f"no {word} has an id starting with {text!r}", status=404)
    lines = [f"{i}  {label}" for i, label in matches] + (["..."] if more else [])
    fail(f"{text!r} is ambiguous: {'more than ' if more else ''}{len(matches)} {word}s match; give more characters:",
         status=409, lines=lines)  # fmt: skip


def short(value: Any, wide: bool = False) -> str:
    """An id as tables show it: its first 8 characters (enough to paste back), or whole with --wide."""
    text = "" if value is None else str(value)
    return text if wide or not _UUID.match(text) else text[:SHORT]


def _is_id(column: str) -> bool:
    return column == "id" or column.endswith("_id")


def dump(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    return obj


def show(
    obj: Any,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    *,
    wide: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    """Print ``obj`` (a model or a list of models) as JSON (full ids) or as a table of ``columns`` (short ids)."""
    if as_json:
        emit_json(dump(obj))
        return
    rows = obj if isinstance(obj, list) else [obj]
    data = [dump(r) for r in rows]
    cols = list(columns or (data[0].keys() if data else []))
    table = Table(title=title)
    for c in cols:
        header = (headers or {}).get(c) or c.replace("_", " ").title()
        if _is_id(c):
            # An id is for pasting back: whole (never wrapped or cut with "…"); the other columns
            # wrap instead when the terminal is narrow (80 columns included).
            table.add_column(header, no_wrap=True, overflow="ignore", min_width=ID_WIDTH if wide else SHORT)
        else:
            table.add_column(header, overflow="fold")
    for d in data:
        table.add_row(*[short(d.get(c), wide) for c in cols])
    console.print(table)


def show_list(
    fetch: Callable[[Client], Sequence[Any]],
    as_json: bool,
    row: Callable[[Any], dict[str, Any]],
    columns: Sequence[str],
    *,
    empty: str | None = None,
    wide: bool = False,
) -> None:
    """A listing command's body: ``fetch`` the items from the server, then print them: JSON as the
    server sent them; a table of ``row(item)``; or, with nothing to list, the ``empty`` line that
    says how to make the first one (without one, an empty table)."""
    with client() as c:
        rows = fetch(c)
    if as_json:
        show(list(rows), True)
    elif not rows and empty is not None:
        console.print(empty)
    else:
        show([row(r) for r in rows], False, columns, wide=wide)


def show_lines(obj: Any, as_json: bool, *lines: str | None, highlight: bool = False) -> None:
    """What a command that made or changed one thing says: the thing as JSON with --json, else
    ``lines`` (a None one is left out)."""
    if as_json:
        show(obj, True)
        return
    for line in lines:
        if line is not None:
            console.print(line, highlight=highlight)


def act_on(kind: str, text: str, action: Callable[[Client, UUID], Any], as_json: bool, columns: Sequence[str]) -> None:
    """A command on one id: ``resolve`` it, have the server ``action`` it, show what comes back."""
    with client() as c:
        show(action(c, resolve(c, kind, text)), as_json, columns)
