"""`gpufleet up`'s own agent: this machine's GPUs (NVML) or a simulated inventory, as a child process.

The agent runs as ``python -m gpufleet.agent`` -- the very program a remote GPU host runs, over
HTTP to this server -- started once the server answers /readyz, and stopped (SIGTERM, then a
wait; SIGKILL only if it hangs) when the server is asked to stop, before it stops answering, so
the agent's last reports still land (cli/server.py's ``_Server``). It registers with a one-use join token of
the default organization, created here through the service layer, or reuses the host credential
it stored in ``DATA_DIR/agent`` on an earlier run. Its jobs are stopped with it
(``--stop-jobs-on-exit``): nothing of gpufleet runs after `gpufleet up` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any

import httpx

from gpufleet.agent.credentials import CredentialStore
from gpufleet.agent.gpus import GpuDiscoveryError, open_backend
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.services.bootstrap import local_agent_token

log = logging.getLogger("gpufleet.up")

DEFAULT_SIMULATION = "4xA100-80GB"  # the architecture sketch's demo job asks for an A100 with >= 8 GB
STOP_WAIT_S = 20.0  # the agent stops its jobs (SIGTERM, SIGKILL after at most 5 s) before it exits


def choose_inventory(simulate: str | None) -> tuple[str | None, str]:
    """``(None, message)`` for NVML when this machine has NVIDIA GPUs, else a simulated spec."""
    if simulate:
        return simulate, f"local agent: SIMULATED inventory {simulate} (--simulate); jobs run as real processes"
    try:
        backend = open_backend(None)
        try:
            gpus = backend.discover()
        finally:
            backend.close()
    except GpuDiscoveryError:
        gpus = []
    if gpus:
        models = sorted({g.model for g in gpus})
        return None, f"local agent: {len(gpus)} NVIDIA GPU(s) found by NVML ({', '.join(models)})"
    return DEFAULT_SIMULATION, (
        f"no NVIDIA driver found: using a SIMULATED inventory {DEFAULT_SIMULATION}; "
        "jobs run as real processes on this machine"
    )


class LocalAgent:
    def __init__(self, settings: Settings, url: str, simulate: str | None) -> None:
        self.settings = settings
        self.url = url
        self.simulate = simulate
        self.state_dir = settings.data_dir / "agent"
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def run(self, db: Database) -> None:
        """Wait for the server, then keep the agent running (one restart after a refused credential)."""
        await self._ready()
        for _ in range(2):
            env = {**os.environ, "GPUFLEET_URL": self.url}
            env.pop("GPUFLEET_JOIN_TOKEN", None)
            if not self._adopt_credential():
                env["GPUFLEET_JOIN_TOKEN"] = await local_agent_token(db)  # in the environment, not argv
            args = [
                "-m",
                "gpufleet.agent",
                "--state-dir",
                str(self.state_dir),
                "--stop-jobs-on-exit",
                "--log-level",
                "warning",
            ]
            if self.simulate:
                args += ["--simulate", self.simulate]
            if self._stopping:
                return
            self.proc = await asyncio.create_subprocess_exec(sys.executable, *args, env=env)
            if self._stopping:  # asked to stop while it was being started
                self.signal_stop()
            code = await self.proc.wait()
            if self._stopping:
                return
            revoked = not CredentialStore(self.state_dir).path.exists()
            log.error("the local agent exited with status %d%s", code, "; registering it again" if revoked else "")
            if not revoked:
                return

    async def _ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while not self._stopping:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    def _adopt_credential(self) -> bool:
        """A credential stored by an earlier run is this server's (same data dir): follow a new port."""
        store = CredentialStore(self.state_dir)
        try:
            raw: dict[str, Any] = json.loads(store.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if raw.get("server") != self.url:
            raw["server"] = self.url
            tmp = store.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(raw, fh)
            tmp.replace(store.path)
        return True

    def signal_stop(self) -> None:
        """Ask the agent to stop (non-blocking; safe from a signal handler)."""
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the agent and wait for it (``task`` is ``run``'s); SIGKILL only if it hangs."""
        self.signal_stop()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if not done:
            log.error("the local agent did not stop within %.0f s; killing it", STOP_WAIT_S)
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
