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
from typing import NoReturn

import typer

from gpufleet.instance_lock import InstanceBusy, InstanceLock

TOKEN_ENV = "GPUFLEET_JOIN_TOKEN"  # noqa: S105 (a variable name, not a secret)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (no Rich console here: the agent-only install keeps its imports small)."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def agent(
    server: list[str] = typer.Option(
        ...,
        "--server",
        envvar="GPUFLEET_URL",
        help="The gpufleet server's URL; for several replicas repeat it or separate URLs with commas "
        "(the agent stays on one that answers and moves to the next on connection errors and 5xx).",
    ),
    join_token: str = typer.Option(
        None,
        "--join-token",
        metavar="-|TOKEN",
        help="gfj_... token, needed only to register; '-' reads it from stdin. Prefer GPUFLEET_JOIN_TOKEN "
        "or --join-token-file: a token given here is visible to every user in `ps`.",
    ),
    join_token_file: Path = typer.Option(
        None, "--join-token-file", help="Read the join token from this file (e.g. a secret mounted by systemd)."
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
    job_user: str = typer.Option(
        "auto",
        "--job-user",
        help="Who jobs run as: auto (as root, an unprivileged gpufleet-job-N user per job), agent, or a user name.",
    ),
    work_dir: Path = typer.Option(
        None, "--work-dir", help="Where jobs' working directories go (default: /var/lib/gpufleet/work/... as root)."
    ),
    env_dir: Path = typer.Option(
        None, "--env-dir", help="Where model environments are cached (default: /var/lib/gpufleet/envs/... as root)."
    ),
    pip_index_url: str = typer.Option(None, "--pip-index-url", help="pip's index for model packages (a mirror)."),
    pip_extra_index_url: list[str] = typer.Option(
        [], "--pip-extra-index-url", help="Another index for model packages, repeatable."
    ),
    pip_find_links: list[str] = typer.Option(
        [], "--pip-find-links", help="A directory or URL of wheels for model packages, repeatable (air-gapped hosts)."
    ),
    pip_no_index: bool = typer.Option(
        False, "--pip-no-index", help="Install model packages only from --pip-find-links, never from an index."
    ),
    pip_allow_source: bool = typer.Option(
        False,
        "--pip-allow-source",
        help="Let model packages build from source distributions (their build code runs as the agent's user).",
    ),
    metrics_port: int = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve this agent's Prometheus /metrics on this port."
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="The address --metrics-port listens on (default: this host only)."
    ),
) -> None:
    """Register this host (once), report its GPUs and run the jobs the server assigns until stopped (SIGTERM/SIGINT).

    The join token is read from GPUFLEET_JOIN_TOKEN, --join-token-file FILE or stdin (--join-token -).
    """
    _shed_server_modules()
    from gpufleet.agent.loop import Agent, AgentConfig, AgentError
    from gpufleet.agent.replicas import parse_servers
    from gpufleet.agent.runner.envs import PipOptions
    from gpufleet.paths import default_state_dir

    try:
        servers = ",".join(parse_servers(server))
    except ValueError as exc:
        fail(f"--server: {exc}")

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if log_level.lower() != "debug":  # one line per request, heartbeats included, would drown what matters
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    token = _join_token(join_token, join_token_file)
    state_dir = state_dir or default_state_dir()
    lock = InstanceLock(state_dir / "agent.lock")
    try:
        lock.acquire(url=servers)
    except InstanceBusy as busy:
        fail(
            f"an agent is already running with state dir {state_dir} ({busy.describe()}); "
            "to run another agent on this machine, give it its own --state-dir"
        )
    except OSError as exc:
        fail(f"cannot use the state dir {state_dir}: {exc.strerror or exc}")
    config = AgentConfig(
        server=servers,
        join_token=token,
        name=name,
        labels=_labels(label),
        simulate=simulate,
        sim_host=sim_host,
        state_dir=state_dir,
        interval_s=interval,
        stop_jobs_on_exit=stop_jobs_on_exit,
        job_user=job_user,
        work_dir=work_dir,
        env_dir=env_dir,
        pip=PipOptions(
            index_url=pip_index_url,
            extra_index_urls=tuple(pip_extra_index_url),
            find_links=tuple(pip_find_links),
            no_index=pip_no_index,
            allow_source=pip_allow_source,
        ),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        the_agent = Agent(config)
        if metrics_port is not None:
            from gpufleet.agent.metrics import serve

            try:
                serve(the_agent, metrics_port, metrics_host)
            except OSError as exc:
                fail(f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: {exc.strerror or exc}")
        await the_agent.run(stop)

    try:
        asyncio.run(main())
    except AgentError as exc:
        fail(str(exc))
    finally:
        lock.release()


def _join_token(value: str | None, path: Path | None) -> str | None:
    """The join token from one place: the file, stdin (``-``), the argument (warned), else the environment.

    The environment variable is dropped once read, so the agent's jobs never inherit it.
    """
    from_env = os.environ.pop(TOKEN_ENV, None)
    if value is not None and path is not None:
        fail("give the join token once: --join-token or --join-token-file, not both")
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"--join-token-file {path}: {exc.strerror or exc}")
        if not token:
            fail(f"--join-token-file {path} is empty")
        return token
    if value == "-":
        token = sys.stdin.readline().strip()
        if not token:
            fail("--join-token -: nothing was read from stdin")
        return token
    if value:
        sys.stderr.write(
            f"warning: --join-token TOKEN is visible to every user of this machine in `ps`; pass it as "
            f"{TOKEN_ENV}=..., with --join-token-file FILE, or on stdin with --join-token -\n"
        )
        return value
    return from_env or None


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


def agent_only_main() -> None:
    """`gpufleet` of the agent-only install (packaging/agent): `agent` and `version`, nothing else."""
    from gpufleet import __version__

    args = sys.argv[1:]
    if args[:1] == ["agent"]:
        app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.command()(agent)
        app(args=args[1:], prog_name="gpufleet agent")
    elif args[:1] in (["version"], ["--version"]):
        sys.stdout.write(f"{__version__}\n")
    elif not args or args[0] in ("-h", "--help"):
        sys.stdout.write("usage: gpufleet agent --server URL [OPTIONS]   (see gpufleet agent --help)\n")
        sys.stdout.write("       gpufleet version\n")
    else:
        sys.stderr.write(
            f"error: `gpufleet {args[0]}` is not part of the agent-only install (gpufleet-agent); "
            "install the full gpufleet package for the server and the rest of the CLI\n"
        )
        sys.exit(2)
