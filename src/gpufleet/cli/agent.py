"""`gpufleet agent`: run the node agent on a GPU host (outbound HTTP(S) only).

The full `gpufleet` command imports the server (FastAPI, asyncpg, the scheduler, ...); an agent
needs none of it, so `gpufleet agent` re-executes itself as `python -m gpufleet.agent` with the
same arguments (same process id, so signals and supervisors are unaffected): about 30 MB less
resident memory on every GPU host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import typer

from gpufleet.cli.common import fail


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def agent(
    server: str = typer.Option(..., "--server", envvar="GPUFLEET_URL", help="The gpufleet server's URL."),
    join_token: str = typer.Option(
        None, "--join-token", envvar="GPUFLEET_JOIN_TOKEN", help="gfj_... token; needed only to register."
    ),
    name: str = typer.Option(None, "--name", help="Host name in gpufleet (default: the hostname)."),
    label: list[str] = typer.Option([], "--label", help="KEY=VALUE, repeatable."),
    simulate: str = typer.Option(
        None, "--simulate", help="Simulated GPUs instead of NVML: a spec such as 4xA100-80GB, or a hosts YAML file."
    ),
    sim_host: str = typer.Option(None, "--sim-host", help="Which host of the --simulate YAML file."),
    state_dir: Path = typer.Option(
        None, "--state-dir", help="Where the host credential is kept (default: XDG data dir, /var/lib as root)."
    ),
    interval: float = typer.Option(
        None, "--interval", min=0.1, help="Heartbeat interval in seconds (default: the server's)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    stop_jobs_on_exit: bool = typer.Option(
        False,
        "--stop-jobs-on-exit",
        help="Stop running jobs when the agent stops (default: they keep running and a restarted agent adopts them).",
    ),
) -> None:
    """Register this host (once), report its GPUs and run the jobs the server assigns until stopped (SIGTERM/SIGINT)."""
    _shed_server_modules()
    from gpufleet.agent.credentials import default_state_dir
    from gpufleet.agent.loop import Agent, AgentConfig, AgentError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = AgentConfig(
        server=server,
        join_token=join_token,
        name=name,
        labels=_labels(label),
        simulate=simulate,
        sim_host=sim_host,
        state_dir=state_dir or default_state_dir(),
        interval_s=interval,
        stop_jobs_on_exit=stop_jobs_on_exit,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(config).run(stop)

    try:
        asyncio.run(main())
    except AgentError as exc:
        fail(str(exc))


def _shed_server_modules() -> None:
    """From the full CLI, exec the light entry point with the same arguments (options were checked)."""
    if "fastapi" not in sys.modules or Path(sys.argv[0]).name not in ("gpufleet", "main.py"):
        return
    if "agent" not in sys.argv[1:]:
        return
    args = sys.argv[sys.argv.index("agent") + 1 :]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gpufleet.agent", *args])  # noqa: S606 (no shell; our own module)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)


def standalone() -> None:
    """`python -m gpufleet.agent`: the agent command without the rest of the CLI."""
    typer.run(agent)
