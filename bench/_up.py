"""Start `gpufleet up` (server, embedded database, scheduler, simulated local agent) for a benchmark."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    base: Path
    proc: subprocess.Popen[bytes]
    url: str
    key: str
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)  # started by add_agents

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def processes(self) -> dict[str, psutil.Process]:
        """The server process, its agent child and the embedded PostgreSQL (postmaster + backends)."""
        server = psutil.Process(self.proc.pid)
        out = {"server": server}
        for child in server.children():
            if "gpufleet.agent" in " ".join(child.cmdline()):
                out["agent"] = child
        for i, agent in enumerate(self.agents, start=2):
            out[f"agent{i}"] = psutil.Process(agent.pid)
        for p in psutil.process_iter(["cmdline"]):
            if str(self.base) in " ".join(p.info["cmdline"] or []) and "postgres" in " ".join(p.info["cmdline"] or []):
                out["postgres"] = p
        return out

    def stop(self) -> None:
        for agent in self.agents:
            agent.send_signal(signal.SIGTERM)
        for agent in self.agents:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_server(
    command: list[str],
    env_extra: dict[str, str] | None = None,
    *,
    wait_for_gpus: bool = False,
    keep_database_url: bool = False,
    log_level: str | None = None,
) -> Up:
    """Run ``gpufleet <command>`` on a fresh temporary data dir; return once it answers.

    Ready means /readyz answers and the first-run owner key is in the config file it wrote; with
    ``wait_for_gpus``, also that a ready host with GPUs (the local agent) is registered. The
    embedded database is used unless ``keep_database_url`` lets GPUFLEET_DATABASE_URL through.
    Logging is what a user gets (INFO: one access-log line per request, to the log file) unless
    ``log_level`` says otherwise ("warning" turns the access log off).
    """
    base = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    base.chmod(0o755)  # ours; as root the embedded database's user must traverse it
    port = free_port()
    env = {
        **os.environ,
        "GPUFLEET_DATA_DIR": str(base / "data"),
        "GPUFLEET_CONFIG_DIR": str(base / "cfg"),
        "GPUFLEET_RATE_LIMIT_KEY_PER_MINUTE": "1000000000",
        "GPUFLEET_RATE_LIMIT_IP_PER_MINUTE": "1000000000",
        **(env_extra or {}),
    }
    env.pop("GPUFLEET_LOG_LEVEL", None)
    if log_level is not None:
        env["GPUFLEET_LOG_LEVEL"] = log_level
    if not keep_database_url:
        env.pop("GPUFLEET_DATABASE_URL", None)
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpufleet.cli.main", *command, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    cfg = base / "cfg" / "config.toml"
    deadline = time.monotonic() + 120
    key = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gpufleet {command[0]} exited: {(base / 'server.log').read_text()[-2000:]}")
        try:
            key = key or cfg.read_text().split('api_key = "')[1].split('"')[0]
            headers = {"Authorization": f"Bearer {key}"}
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                if not wait_for_gpus:
                    return Up(base, proc, url, key)
                hosts = httpx.get(f"{url}/v1/hosts", headers=headers, timeout=2).json()
                if [h for h in hosts["items"] if h["status"] == "ready"]:
                    gpus = httpx.get(f"{url}/v1/gpus", headers=headers, timeout=2).json()
                    if gpus["items"]:
                        return Up(base, proc, url, key)
        except (OSError, IndexError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"gpufleet {command[0]} did not become ready")


def start_up(simulate: str, env_extra: dict[str, str] | None = None) -> Up:
    """`gpufleet up` with a simulated local agent, once its GPUs are registered."""
    return start_server(["up", "--simulate", simulate], env_extra, wait_for_gpus=True)


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()
            total = t.user + t.system
            if name == "postgres":  # the backends are the postmaster's children
                for c in p.children(recursive=True):
                    with __import__("contextlib").suppress(psutil.Error):
                        ct = c.cpu_times()
                        total += ct.user + ct.system
            out[name] = total
            if name == "agent":  # with what it started: job launcher, supervisors, jobs (reaped or live)
                out["agent_tree"] = total + t.children_user + t.children_system + _children_cpu(p)
        except psutil.Error:
            out[name] = 0.0
    return out


def _children_cpu(p: psutil.Process) -> float:
    total = 0.0
    for c in p.children():
        with __import__("contextlib").suppress(psutil.Error):
            ct = c.cpu_times()
            total += ct.user + ct.system + ct.children_user + ct.children_system
    return total


def add_agents(up: Up, count: int, simulate: str) -> None:
    """``count`` more agents (`gpufleet agent --simulate`, as on other machines), joined with a join
    token; returns once every host is ready with its GPUs."""
    if count <= 0:
        return
    r = httpx.post(f"{up.url}/v1/join-tokens", json={"name": "bench agents"}, headers=up.headers, timeout=10)
    r.raise_for_status()
    env = {**os.environ, "GPUFLEET_JOIN_TOKEN": r.json()["token"], "GPUFLEET_URL": up.url}
    for i in range(2, count + 2):
        args = ["--name", f"bench-agent-{i}", "--simulate", simulate, "--state-dir", str(up.base / f"agent{i}")]
        up.agents.append(
            subprocess.Popen(
                [sys.executable, "-m", "gpufleet.agent", *args, "--stop-jobs-on-exit", "--log-level", "warning"],
                env=env,
                stdout=(up.base / f"agent{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        hosts = httpx.get(f"{up.url}/v1/hosts", headers=up.headers, timeout=5).json()["items"]
        if len([h for h in hosts if h["status"] == "ready"]) >= count + 1:
            return
        for agent in up.agents:
            if agent.poll() is not None:
                raise SystemExit(f"an agent exited: {(up.base / 'agent2.log').read_text()[-2000:]}")
        time.sleep(0.2)
    raise SystemExit("the extra agents did not become ready")
