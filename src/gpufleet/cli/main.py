"""The `gpufleet` command: every subcommand registered here."""

from __future__ import annotations

import sys

import typer

from gpufleet import __version__
from gpufleet.cli import agent as agent_cli
from gpufleet.cli import db as db_cli
from gpufleet.cli import demo as demo_cli
from gpufleet.cli import hosts as hosts_cli
from gpufleet.cli import jobs as jobs_cli
from gpufleet.cli import server as server_cli
from gpufleet.cli import simulate as simulate_cli
from gpufleet.cli import tenancy as tenancy_cli
from gpufleet.cli import webhooks as webhooks_cli
from gpufleet.errors import GpufleetError

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
webhooks_cli.register(app)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except GpufleetError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
