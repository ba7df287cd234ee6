"""`gpufleet up` and `gpufleet server`: run the API server (and, with `up`, everything a first run needs)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI

from gpufleet.api.app import create_app
from gpufleet.cli import config as client_config
from gpufleet.cli.common import console, load_settings
from gpufleet.cli.local_agent import LocalAgent, choose_inventory
from gpufleet.config import Settings
from gpufleet.services.bootstrap import FirstRun


class _Server(uvicorn.Server):
    """uvicorn with `up`'s local agent: started once the app is up, stopped first at shutdown, while
    the server still answers (so the agent's last reports land and no long-poll holds it up)."""

    local_agent: LocalAgent | None = None
    _agent_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.local_agent is not None and self.started:
            app: Any = self.config.app
            self._agent_task = asyncio.create_task(self.local_agent.run(app.state.db), name="local-agent")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.local_agent is not None and self._agent_task is not None:
            await self.local_agent.stop(self._agent_task)
        await super().shutdown(sockets)


def _serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    banner: bool,
    local_agent: bool = False,
    simulate: str | None = None,
) -> None:
    settings = load_settings(host=host, port=port, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # gpufleet logs every request itself (with its request id); uvicorn's access log and the
    # HTTP client's request lines would only repeat it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    where = f"embedded PostgreSQL in {settings.embedded_dir}" if settings.embedded else "GPUFLEET_DATABASE_URL"
    if banner:
        console.print(f"gpufleet on http://{settings.host}:{settings.port}  (database: {where})")
    if settings.workers > 1:
        if local_agent:
            console.print("with several workers no local agent is started: run `gpufleet agent` beside the server")
        # Each worker process builds its own app from the environment; on the embedded database
        # they share one PostgreSQL server (see db/embedded.py), and first-run bootstrap is
        # serialised in the database, so exactly one of them creates the admin.
        os.environ.update({"GPUFLEET_HOST": settings.host, "GPUFLEET_PORT": str(settings.port)})
        uvicorn.run(
            "gpufleet.cli.server:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
        return
    app = create_app(settings, on_first_run=lambda created: _announce_first_run(settings, created))
    agent = None
    if local_agent:
        spec, message = choose_inventory(simulate)
        console.print(message)
        agent = LocalAgent(settings, _local_url(settings), spec)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=3,  # then requests still open (long-polls) are cut
    )
    server = _Server(config)
    server.local_agent = agent
    server.run()


def _local_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    return f"http://{host}:{settings.port}"


def worker_app() -> FastAPI:
    """The app of one worker process when several serve the same port."""
    settings = Settings()
    return create_app(settings, on_first_run=lambda created: _announce_first_run(settings, created))


def _announce_first_run(settings: Settings, created: FirstRun) -> None:
    """Show the first owner key once and keep it for the CLI; it is never logged."""
    path = client_config.save(_local_url(settings), created.api_key)
    console.print(
        f"\nFirst run: created user {created.user.email}, organization '{created.organization.slug}' and an "
        f"owner API key (shown once, saved to {path}, mode 0600):\n\n  {created.api_key}\n"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        host: str = typer.Option(None, help="Address to listen on (GPUFLEET_HOST, default 127.0.0.1)."),
        port: int = typer.Option(None, help="Port to listen on (GPUFLEET_PORT, default 8741)."),
        no_local_agent: bool = typer.Option(
            False, "--no-local-agent", help="Do not run an agent for this machine (the server and scheduler only)."
        ),
        simulate: str = typer.Option(
            None,
            "--simulate",
            metavar="SPEC",
            help="The local agent's simulated GPUs, e.g. 8xH100-80GB (default: NVML, or 4xA100-80GB without a driver).",
        ),
        notify_stderr: bool = typer.Option(
            False, "--notify-stderr", help="Print admin notifications (unreachable hosts, failed allocations, ...)."
        ),
    ) -> None:
        """Start gpufleet: the server (embedded database unless GPUFLEET_DATABASE_URL is set), the
        scheduler, and an agent for this machine's GPUs (simulated when it has none)."""
        if notify_stderr:
            os.environ["GPUFLEET_NOTIFY_STDERR"] = "true"
        _serve(host, port, None, banner=True, local_agent=not no_local_agent, simulate=simulate)

    @app.command()
    def server(
        host: str = typer.Option(None, help="Address to listen on."),
        port: int = typer.Option(None, help="Port to listen on."),
        workers: int = typer.Option(None, help="Worker processes."),
    ) -> None:
        """Run the API server only."""
        _serve(host, port, workers, banner=False)
