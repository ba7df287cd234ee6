"""create_app(settings): the FastAPI application and its lifespan (database up, then down)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gpufleet import __version__
from gpufleet.api import errors, openapi
from gpufleet.api.middleware import AccessLog, AddressRateLimit, BodyLimit, RequestId
from gpufleet.api.ratelimit import RateLimiter
from gpufleet.api.routes import (
    access,
    agent,
    agent_jobs,
    agent_models,
    agent_predictions,
    deployments,
    events,
    hosts,
    job_logs,
    jobs,
    ops,
    predictions,
    quotas,
    tenancy,
    webhooks,
)
from gpufleet.api.routes import costs as costs_routes
from gpufleet.api.routes import files as files_routes
from gpufleet.api.routes import fleet as fleet_routes
from gpufleet.api.routes import models as models_routes
from gpufleet.api.routes import resolve as resolve_routes
from gpufleet.api.state import AppState, app_state
from gpufleet.background import (
    autoscaler,
    events_retention,
    files_retention,
    liveness,
    notify,
    reaper,
    retention,
    webhook_delivery,
)
from gpufleet.background import costs as costs_loop
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.setup import DatabaseHandle, open_database
from gpufleet.domain.execution import ExecutionPolicy
from gpufleet.inference.archive import MAX_ARCHIVE_BYTES
from gpufleet.observability import ServerMetrics
from gpufleet.scheduler.service import Scheduler
from gpufleet.services.auth import Authenticator
from gpufleet.services.bootstrap import FirstRun, first_run
from gpufleet.services.fleet_metrics import FleetExporter
from gpufleet.services.host_auth import HostAuthenticator
from gpufleet.services.wakeups import WakeHub
from gpufleet.web import install as _web_install

log = logging.getLogger(__name__)

FirstRunHook = Callable[[FirstRun], Awaitable[None] | None]
LOG_UPLOAD_PATH = re.compile(r"^/v1/agent/jobs/[^/]+/logs$|^/v1/agent/reports$|^/v1/agent/predictions/events$")
MODEL_PUSH_PATH = re.compile(r"^/v1/models/[^/]+/[^/]+/versions$")
FILE_UPLOAD_PATH = re.compile(r"^/v1(/agent)?/files$")  # members' uploads, and the Model Runner's outputs
MULTIPART_OVERHEAD = 64 * 1024  # the form's boundaries, headers and small fields around the file


def create_app(
    settings: Settings,
    *,
    database: DatabaseHandle | None = None,
    on_first_run: FirstRunHook | None = None,
    bootstrap: bool = True,
    background: bool = True,
) -> FastAPI:
    """Build the app. With ``database`` given (tests), the caller owns its lifecycle.

    ``background`` starts the periodic work every replica runs (the scheduler, which only acts
    while it holds leadership, host liveness, metrics retention and the reaper); tests of the HTTP
    layer leave it off and call each task's ``run_once`` themselves. The wake-up hub of
    long-polling agents and log followers runs either way.
    """
    limiter_holder: dict[str, RateLimiter] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handle = database or await open_database(settings)
        limiter = RateLimiter(handle.db, sync_s=settings.rate_limit_sync_s)
        limiter_holder["limiter"] = limiter
        hub = WakeHub.from_settings(handle.db, settings)
        await hub.start()
        metrics: ServerMetrics = app.state.metrics
        state = AppState(
            settings=settings,
            metrics=metrics,
            handle=handle,
            db=handle.db,
            authenticator=Authenticator(handle.db, settings),
            host_authenticator=HostAuthenticator(handle.db),
            limiter=limiter,
            hub=hub,
            execution_policy=ExecutionPolicy.from_settings(settings),
            fleet_exporter=FleetExporter(handle.db, None, metrics, interval_s=settings.metrics_fleet_interval_s),
            scheduler=Scheduler(handle.db, settings, metrics=metrics) if background else None,
        )
        state.install(app)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(limiter.run(stop), name="rate-limit-sync")]
        tasks.append(asyncio.create_task(state.fleet_exporter.run(stop), name="fleet-metrics"))
        if state.scheduler is not None:
            scheduler = state.scheduler
            state.fleet_exporter.scheduler = scheduler  # the fleet's gauges come from the scheduler's leader
            if settings.scheduler_enabled:
                tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
            tasks.append(asyncio.create_task(liveness.run(handle.db, settings, stop), name="liveness"))
            tasks.append(asyncio.create_task(retention.run(handle.db, settings, stop), name="retention"))
            tasks.append(asyncio.create_task(reaper.run(handle.db, settings, stop), name="reaper"))
            tasks.append(asyncio.create_task(costs_loop.run(handle.db, settings, stop), name="costs"))
            tasks.append(asyncio.create_task(events_retention.run(handle.db, settings, stop), name="events-retention"))
            tasks.append(asyncio.create_task(autoscaler.run(handle.db, settings, stop), name="autoscaler"))
            tasks.append(asyncio.create_task(files_retention.run(handle.db, settings, stop), name="files-retention"))
            if settings.webhook_delivery_enabled:
                tasks.append(
                    asyncio.create_task(
                        webhook_delivery.run(handle.db, settings, stop, metrics=metrics), name="webhooks"
                    )
                )
            if settings.notify_stderr:
                tasks.append(asyncio.create_task(notify.run(handle.db, stop), name="notify-stderr"))
        try:
            if bootstrap:
                created = await first_run(handle.db, settings)
                if created is not None and on_first_run is not None:
                    result = on_first_run(created)
                    if asyncio.iscoroutine(result):
                        await result
            yield
        finally:
            stop.set()
            # Let a cycle in flight finish its commit; then stop whatever is left.
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await hub.close()
            metrics.close()
            # uvicorn re-raises SIGTERM after shutdown, so atexit would never run: stop here.
            if database is None:
                await handle.close()

    app = FastAPI(
        title="gpufleet",
        version=__version__,
        summary="Self-hosted, multi-tenant GPU fleet manager",
        lifespan=lifespan,
        docs_url=None,  # served by openapi.install from the package, not a CDN
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    app.state.metrics = ServerMetrics()
    errors.install(app)

    class _LazyLimiter(RateLimiter):
        """The middleware is built before the lifespan runs; it reaches the real limiter then."""

        def __init__(self) -> None:
            pass

        def hit(self, bucket: str, limit: int, *, now: float | None = None) -> Any:
            return limiter_holder["limiter"].hit(bucket, limit, now=now)

    # add_middleware wraps what is there: the last added runs first (RequestId, then AccessLog, ...).
    app.add_middleware(errors.ContainUnexpected)  # inside the access log, so it records the 500 or 503
    app.add_middleware(AddressRateLimit, limiter=_LazyLimiter(), per_minute=settings.rate_limit_ip_per_minute)
    app.add_middleware(
        BodyLimit,
        max_body=settings.max_body_bytes,
        body_limits=[
            (LOG_UPLOAD_PATH, max(settings.max_body_bytes, settings.log_upload_max_body_bytes)),
            (MODEL_PUSH_PATH, max(settings.max_body_bytes, MAX_ARCHIVE_BYTES)),
            (FILE_UPLOAD_PATH, max(settings.max_body_bytes, settings.files_max_bytes + MULTIPART_OVERHEAD)),
        ],
    )
    app.add_middleware(AccessLog, metrics=app.state.metrics)
    app.add_middleware(RequestId)
    routers = (tenancy, access, jobs, job_logs, quotas, hosts, agent, agent_jobs, events, webhooks, ops, resolve_routes)
    routers_predictions = (predictions, deployments, agent_predictions)
    for module in routers_predictions:
        app.include_router(module.router)
    for module in routers:
        app.include_router(module.router)
    openapi.install(app)
    app.include_router(costs_routes.router)
    app.include_router(models_routes.router)
    app.include_router(files_routes.router)
    app.include_router(agent_models.router)
    app.include_router(fleet_routes.router)
    _web_install(app, settings)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> Any:
        """Readiness: the database answers and every migration is applied."""
        retry = {"Retry-After": str(errors.RETRY_AFTER_S)}
        try:
            async with app_state(request).db.owner_connection() as conn:
                current = await migrate.is_current(conn)
        except Exception as exc:  # any failure to reach the database means "not ready"
            log.warning("readiness check failed: %s", exc)
            return errors.problem(503, "Service Unavailable", "database unreachable", headers=retry)
        if not current:
            return errors.problem(503, "Service Unavailable", "database migrations are not current", headers=retry)
        return JSONResponse({"status": "ready", "database": "ok", "migrations": "current"})

    return app
