"""What every CLI command shares: settings, one-line errors (JSON with --json), exit codes, --json output."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from gpufleet.config import Settings

console = Console()
err_console = Console(stderr=True)

# Exit codes (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1  # the request failed: refused by the server, not found, server unreachable, ...
EXIT_USAGE = 2  # the command line is wrong: unknown option, bad value, conflicting flags
EXIT_UNSUCCESSFUL = 3  # `jobs wait` / `submit --wait`: the job finished but did not succeed
EXIT_TIMEOUT = 4  # `jobs wait --timeout`: the job had not finished when the time ran out

# Set by main() when --json is on the command line, so errors before a command runs are JSON too.
json_errors = False


def error(message: str, *, status: int | None = None, code: int = EXIT_ERROR, lines: Sequence[str] = ()) -> None:
    """Write one error to stderr: a line (plus ``lines``, e.g. the matches of an ambiguous id), or JSON."""
    if json_errors:
        body: dict[str, Any] = {"error": message, "status": status, "exit_code": code}
        if lines:
            body["matches"] = list(lines)
        sys.stderr.write(json.dumps(body) + "\n")
        return
    err_console.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False, soft_wrap=True)
    for line in lines:
        err_console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)


def fail(message: str, code: int = EXIT_ERROR, *, status: int | None = None, lines: Sequence[str] = ()) -> NoReturn:
    error(message, status=status, code=code, lines=lines)
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    """A command line that cannot mean anything (e.g. conflicting flags): one line, exit 2."""
    fail(message, EXIT_USAGE)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        msg = first.get("msg", "invalid").removeprefix("Value error, ")
        fail(f"invalid configuration ({field}): {msg}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
