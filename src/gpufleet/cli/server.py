"""`gpufleet up` and `gpufleet server`: run the API server (and, with `up`, everything a first run needs)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI

from gpufleet.api.app import create_app
from gpufleet.cli import config as client_config
from gpufleet.cli.common import console, fail, load_settings
from gpufleet.cli.local_agent import LocalAgent, choose_inventory
from gpufleet.config import Settings
from gpufleet.instance_lock import InstanceBusy, InstanceLock
from gpufleet.observability import MULTIPROC_ENV, configure_logging
from gpufleet.paths import data_dir_why
from gpufleet.services.bootstrap import FirstRun

LOCK_FILE = "gpufleet.lock"  # in the data dir: one `gpufleet up` per data dir


class _QuietCut(logging.Filter):
    """At shutdown, a request still open after the grace period (a log stream, a long poll) is cut:
    uvicorn logs each as an "Exception in ASGI application" traceback. That is the expected end of
    such a request, so it is counted instead and summed up in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            self.cut += 1
            return False
        return "timeout graceful shutdown" not in str(record.msg)


class _Server(uvicorn.Server):
    """uvicorn, stopping in order: `up`'s local agent and its jobs first, while the server still
    answers (so the agent's last reports land), then the server (open long polls answer at once),
    then the database (the app's lifespan). A signal is not re-raised after the stop as uvicorn
    does: the stop is complete, so the process exits 0 and asyncio cancels no request midway."""

    local_agent: LocalAgent | None = None
    _agent_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.local_agent is not None and self.started:
            app: Any = self.config.app
            self._agent_task = asyncio.create_task(self.local_agent.run(app.state.gpufleet.db), name="local-agent")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.local_agent is not None and self._agent_task is not None:
            await self.local_agent.stop(self._agent_task)
        state = getattr(getattr(self.config.app, "state", None), "gpufleet", None)  # AppState, once started
        if state is not None:
            state.hub.drain()  # long polls (the agent's assignments, event feeds) answer now instead of in 30 s
        quiet = _QuietCut()
        logging.getLogger("uvicorn.error").addFilter(quiet)
        await super().shutdown(sockets)
        if quiet.cut:
            console.print(f"{quiet.cut} open request(s) (log streams, long polls) were cut at shutdown")

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # a second Ctrl-C: skip the waits (the agent still stops its jobs)
            self.force_exit = True
            return
        self.should_exit = True
        what = (
            "the local agent and its jobs, then the server, then the database"
            if self.local_agent
            else ("the server, then the database")
        )
        sys.stderr.write(f"stopping ({signal.Signals(sig).name}): {what}\n")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a port in use is one line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"port {port} on {host} is already in use (another gpufleet, or another program); "
                "choose another with --port or GPUFLEET_PORT"
            )
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return sock


def _lock_data_dir(settings: Settings) -> InstanceLock:
    lock = InstanceLock(settings.data_dir / LOCK_FILE)
    try:
        # 0755: as root, the embedded PostgreSQL's own user must traverse the data dir.
        lock.acquire(dir_mode=0o755, url=_local_url(settings), data_dir=str(settings.data_dir))
    except InstanceBusy as busy:
        fail(
            f"gpufleet is already running with the data dir {settings.data_dir} ({busy.describe()}); "
            "to run a second instance, give it its own data dir and port: "
            "GPUFLEET_DATA_DIR=/another/dir gpufleet up --port 8742"
        )
    except OSError as exc:
        fail(f"cannot use the data dir {settings.data_dir}: {exc.strerror or exc}")
    return lock


def _serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    banner: bool,
    local_agent: bool = False,
    simulate: str | None = None,
) -> None:
    settings = load_settings(host=host, port=port, workers=workers)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    # gpufleet logs every request itself (with its request id); uvicorn's access log and the
    # HTTP client's request lines would only repeat it.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    where = f"embedded PostgreSQL in {settings.embedded_dir}" if settings.embedded else "GPUFLEET_DATABASE_URL"
    # `up` (the banner) owns its data dir and its local agent's state: one per data dir. `server`
    # does not: replicas may share an embedded database on purpose (db/embedded.py).
    lock = _lock_data_dir(settings) if banner else None
    if settings.workers > 1:
        if local_agent:
            console.print("with several workers no local agent is started: run `gpufleet agent` beside the server")
        # Each worker process builds its own app from the environment; on the embedded database
        # they share one PostgreSQL server (see db/embedded.py), and first-run bootstrap is
        # serialised in the database, so exactly one of them creates the admin.
        os.environ.update({"GPUFLEET_HOST": settings.host, "GPUFLEET_PORT": str(settings.port)})
        _metrics_dir()
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
    sock = _bind(settings.host, settings.port)
    if banner:
        console.print(f"gpufleet on http://{settings.host}:{settings.port}  (database: {where})", soft_wrap=True)
        console.print(f"data dir: {settings.data_dir} ({data_dir_why(settings.data_dir)})", soft_wrap=True)
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
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if lock is not None:
            lock.release()
    if server.started:
        console.print("gpufleet stopped")


def _metrics_dir() -> None:
    """Several workers share /metrics through prometheus-client's multiprocess directory: each
    worker writes its values there and a scrape reads them all. It is set before the workers start
    (they read it at import) and emptied, so counts from an earlier run do not linger."""
    given = os.environ.get(MULTIPROC_ENV)
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="gpufleet-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)


def _local_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    return f"http://{host}:{settings.port}"


def worker_app() -> FastAPI:
    """The app of one worker process when several serve the same port."""
    settings = Settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    return create_app(settings, on_first_run=lambda created: _announce_first_run(settings, created))


def _announce_first_run(settings: Settings, created: FirstRun) -> None:
    """Keep the first owner key for the CLI; show it once, and only on a terminal: a service's
    stdout goes to its logs, where a secret must never land."""
    path = client_config.save(_local_url(settings), created.api_key)
    what = f"created user {created.user.email}, organization '{created.organization.slug}' and an owner API key"
    if sys.stdout.isatty():
        console.print(f"\nFirst run: {what} (shown once, saved to {path}, mode 0600):\n\n  {created.api_key}\n")
    else:
        console.print(
            f"First run: {what}, saved to {path} (mode 0600; not printed, as stdout is not a terminal)",
            soft_wrap=True,
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
