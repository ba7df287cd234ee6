"""deploy/: the systemd units and the container image name commands, options and settings that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from gpufleet.cli.main import app
from gpufleet.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NOT_SETTINGS = {"GPUFLEET_URL", "GPUFLEET_JOIN_TOKEN"}  # the agent's, read by its command line


def _unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (systemd allows a key several times)."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _options(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _settings_names(text: str) -> set[str]:
    return set(re.findall(r"\bGPUFLEET_[A-Z_]+\b", text)) - NOT_SETTINGS


def test_every_gpufleet_variable_in_deploy_is_a_setting() -> None:
    known = {f"GPUFLEET_{name.upper()}" for name in Settings.model_fields}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            unknown = _settings_names(path.read_text()) - known
            assert not unknown, f"{path.relative_to(ROOT)}: {sorted(unknown)}"


def test_the_server_unit_runs_a_replica_on_its_instance_port() -> None:
    unit = _unit("gpufleet-server@.service")
    (start,) = unit["ExecStart"]
    argv = shlex.split(start)
    assert argv[0].endswith("/bin/gpufleet") and argv[1:] == ["server", "--port", "%i"]
    assert "--port" in _options("server")
    assert unit["KillSignal"] == ["SIGTERM"] and unit["Restart"] == ["always"]


def test_the_agent_unit_keeps_jobs_across_a_restart_and_reads_its_token_from_a_credential() -> None:
    unit = _unit("gpufleet-agent.service")
    (start,) = unit["ExecStart"]
    argv = shlex.split(start)
    assert argv[1] == "agent"
    flags = [a for a in argv[2:] if a.startswith("--")]
    help_text = _options("agent")
    assert flags and all(flag in help_text for flag in flags), flags
    assert unit["KillMode"] == ["process"]
    assert any(c.startswith("join-token:") for c in unit["LoadCredential"])
    env = (DEPLOY / "agent.env.example").read_text()
    assert re.search(r"^GPUFLEET_URL=https://[^,\s]+,https://", env, re.M)  # every replica


def test_the_image_builds_from_files_that_exist_and_runs_the_server() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), item
    assert 'ENTRYPOINT ["gpufleet"]' in dockerfile and 'CMD ["server"]' in dockerfile
    assert "/healthz" in dockerfile and "STOPSIGNAL SIGTERM" in dockerfile
