"""The `gpufleet` command: every subcommand registered here, global options, and how errors end it."""

from __future__ import annotations

import sys

import typer

from gpufleet import __version__
from gpufleet.cli import agent as agent_cli
from gpufleet.cli import common
from gpufleet.cli import costs as costs_cli
from gpufleet.cli import db as db_cli
from gpufleet.cli import demo as demo_cli
from gpufleet.cli import hosts as hosts_cli
from gpufleet.cli import jobs as jobs_cli
from gpufleet.cli import models as models_cli
from gpufleet.cli import predictions as predictions_cli
from gpufleet.cli import server as server_cli
from gpufleet.cli import simulate as simulate_cli
from gpufleet.cli import tenancy as tenancy_cli
from gpufleet.cli import webhooks as webhooks_cli
from gpufleet.errors import GpufleetError

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on click itself
    import click.exceptions as click_exc  # type: ignore[no-redef]

app = typer.Typer(
    name="gpufleet",
    help="gpufleet: a self-hosted, multi-tenant GPU fleet manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_cli.app, name="db")
server_cli.register(app)
tenancy_cli.register(app)
simulate_cli.register(app)
demo_cli.register(app)
hosts_cli.register(app)
agent_cli.register(app)
jobs_cli.register(app)
costs_cli.register(app)
webhooks_cli.register(app)
models_cli.register(app)
predictions_cli.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    url: str = typer.Option(None, "--url", help="The server (default: GPUFLEET_URL, else the config file)."),
    api_key: str = typer.Option(
        None, "--api-key", help="The API key (default: GPUFLEET_API_KEY, else the config file)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gpufleet: a self-hosted, multi-tenant GPU fleet manager. Ids may be shortened to any unique prefix."""
    ctx.obj = {"url": url, "api_key": api_key}


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _json_requested(argv: list[str]) -> bool:
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


GLOBAL_VALUE_OPTIONS = ("--url", "--api-key")


def _globals_first(argv: list[str]) -> list[str]:
    """``gpufleet jobs list --url U`` as ``gpufleet --url U jobs list``: global options go anywhere before ``--``."""
    end = argv.index("--") if "--" in argv else len(argv)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = argv[i]
        if arg in GLOBAL_VALUE_OPTIONS and i + 1 < end:
            front += argv[i : i + 2]
            i += 2
            continue
        (front if arg.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS else rest).append(arg)
        i += 1
    return front + rest + argv[end:]


def main() -> None:
    argv = _globals_first(sys.argv[1:])
    common.json_errors = _json_requested(argv)
    try:
        code = app(args=argv, prog_name="gpufleet", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(common.EXIT_OK)
    except click_exc.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "gpufleet"
        common.error(f"{exc.format_message()} (see `{where} --help`)", code=common.EXIT_USAGE)
        sys.exit(common.EXIT_USAGE)
    except click_exc.ClickException as exc:
        common.error(exc.format_message(), code=exc.exit_code)
        sys.exit(exc.exit_code)
    except typer.Abort:
        common.error("aborted")
        sys.exit(common.EXIT_ERROR)
    except GpufleetError as exc:
        common.error(exc.message)
        sys.exit(common.EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else common.EXIT_OK)


if __name__ == "__main__":
    main()
