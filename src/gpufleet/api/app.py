"""create_app(settings): the FastAPI application and its lifespan (database up, then down)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gpufleet import __version__
from gpufleet.api import errors
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.setup import DatabaseHandle, open_database

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, database: DatabaseHandle | None = None) -> FastAPI:
    """Build the app. With ``database`` given (tests), the caller owns its lifecycle."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handle = database or await open_database(settings)
        app.state.handle = handle
        app.state.db = handle.db
        try:
            yield
        finally:
            # uvicorn re-raises SIGTERM after shutdown, so atexit would never run: stop here.
            if database is None:
                await handle.close()

    app = FastAPI(
        title="gpufleet",
        version=__version__,
        summary="Self-hosted, multi-tenant GPU fleet manager",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> Any:
        """Readiness: the database answers and every migration is applied."""
        try:
            async with request.app.state.db.owner_connection() as conn:
                current = await migrate.is_current(conn)
        except Exception as exc:  # any failure to reach the database means "not ready"
            log.warning("readiness check failed: %s", exc)
            return errors.problem(503, "Service Unavailable", "database unreachable")
        if not current:
            return errors.problem(503, "Service Unavailable", "database migrations are not current")
        return JSONResponse({"status": "ready", "database": "ok", "migrations": "current"})

    return app
