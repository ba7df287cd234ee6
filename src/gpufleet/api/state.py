"""What the app holds while it runs: one typed ``AppState``, built once in the lifespan (api/app.py).

Routes reach it through ``app_state(request)`` (or ``hub_of``) rather than by reading attributes
off Starlette's untyped ``app.state`` with ``getattr`` defaults; the dependencies of api/deps.py
read it the same way. (``app.state.settings`` and ``app.state.metrics`` exist before the lifespan,
for the middlewares built with the app.)
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request

from gpufleet.api.ratelimit import RateLimiter
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.db.setup import DatabaseHandle
from gpufleet.domain.execution import ExecutionPolicy
from gpufleet.observability import ServerMetrics
from gpufleet.scheduler.service import Scheduler
from gpufleet.services.auth import Authenticator
from gpufleet.services.fleet_metrics import FleetExporter
from gpufleet.services.host_auth import HostAuthenticator
from gpufleet.services.wakeups import WakeHub


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: ServerMetrics
    handle: DatabaseHandle
    db: Database
    authenticator: Authenticator
    host_authenticator: HostAuthenticator
    limiter: RateLimiter
    hub: WakeHub
    fleet_exporter: FleetExporter
    execution_policy: ExecutionPolicy
    scheduler: Scheduler | None = None  # only with the background tasks on

    def install(self, app: FastAPI) -> None:
        app.state.gpufleet = self


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.gpufleet
    return state


def hub_of(request: Request) -> WakeHub:
    """The wake-up hub that long polls and streams sleep on."""
    return app_state(request).hub
