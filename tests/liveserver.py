"""A real gpufleet server on a loopback port, in a thread with its own event loop and pools."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from gpufleet.api.app import create_app
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.db.setup import DatabaseHandle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    owner_dsn: str
    runtime_dsn: str
    settings: dict[str, Any] = field(default_factory=dict)
    background: bool = False
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    app: Any = None  # the running app (its state: the hub, the limiter, ...)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                db = Database(self.owner_dsn, self.runtime_dsn, min_size=1, max_size=10)
                await db.open()
                try:
                    app = create_app(
                        Settings(**self.settings),
                        database=DatabaseHandle(db, None),
                        bootstrap=False,
                        background=self.background,
                    )
                    self.app = app
                    # An agent's assignment long-poll (up to 30 s) would hold the stop up: cut it after 1 s.
                    config = uvicorn.Config(
                        app,
                        host="127.0.0.1",
                        port=self.port,
                        log_level="warning",
                        lifespan="on",
                        timeout_graceful_shutdown=1,
                    )
                    self._server = uvicorn.Server(config)
                    ready.set()
                    await self._server.serve()
                finally:
                    await db.close()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
