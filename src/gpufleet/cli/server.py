"""`gpufleet up` and `gpufleet server`: run the API server (and, with `up`, everything a first run needs)."""

from __future__ import annotations

import logging
import os

import typer
import uvicorn
from fastapi import FastAPI

from gpufleet.api.app import create_app
from gpufleet.cli import config as client_config
from gpufleet.cli.common import console, load_settings
from gpufleet.config import Settings
from gpufleet.services.bootstrap import FirstRun


def _serve(host: str | None, port: int | None, workers: int | None, banner: bool) -> None:
    settings = load_settings(host=host, port=port, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    where = f"embedded PostgreSQL in {settings.embedded_dir}" if settings.embedded else "GPUFLEET_DATABASE_URL"
    if banner:
        console.print(f"gpufleet on http://{settings.host}:{settings.port}  (database: {where})")
    if settings.workers > 1:
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
        )
        return
    app = create_app(settings, on_first_run=lambda created: _announce_first_run(settings, created))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on")


def worker_app() -> FastAPI:
    """The app of one worker process when several serve the same port."""
    settings = Settings()
    return create_app(settings, on_first_run=lambda created: _announce_first_run(settings, created))


def _announce_first_run(settings: Settings, created: FirstRun) -> None:
    """Show the first owner key once and keep it for the CLI; it is never logged."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    url = f"http://{host}:{settings.port}"
    path = client_config.save(url, created.api_key)
    console.print(
        f"\nFirst run: created user {created.user.email}, organization '{created.organization.slug}' and an "
        f"owner API key (shown once, saved to {path}, mode 0600):\n\n  {created.api_key}\n"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        host: str = typer.Option(None, help="Address to listen on (GPUFLEET_HOST, default 127.0.0.1)."),
        port: int = typer.Option(None, help="Port to listen on (GPUFLEET_PORT, default 8741)."),
    ) -> None:
        """Start gpufleet: the server on the embedded database unless GPUFLEET_DATABASE_URL is set."""
        _serve(host, port, None, banner=True)

    @app.command()
    def server(
        host: str = typer.Option(None, help="Address to listen on."),
        port: int = typer.Option(None, help="Port to listen on."),
        workers: int = typer.Option(None, help="Worker processes."),
    ) -> None:
        """Run the API server only."""
        _serve(host, port, workers, banner=False)
