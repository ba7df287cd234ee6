"""docs/cli.md names every command the CLI has (a new command cannot go undocumented)."""

from __future__ import annotations

from pathlib import Path

import typer.main

from gpufleet.cli.main import app

DOC = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()


def _paths(command: object, prefix: str = "") -> list[str]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [prefix.strip()]
    out: list[str] = []
    for name, sub in sorted(subs.items()):
        out += _paths(sub, f"{prefix} {name}")
    return out


def _documented(path: str) -> bool:
    group, _, cmd = path.rpartition(" ")
    if f"gpufleet {path}" in DOC or f"`{path} " in DOC or f"`{path}`" in DOC:
        return True
    return any(f"gpufleet {group} " in line and f"`{cmd} " in line for line in DOC.splitlines())


def test_every_command_is_in_docs_cli_md() -> None:
    paths = _paths(typer.main.get_command(app))
    assert len(paths) > 40 and "whoami" in paths and "keys revoke" in paths
    missing = [p for p in paths if not _documented(p)]
    assert not missing, f"docs/cli.md does not list: {missing}"


def test_the_docs_name_the_environment_config_file_exit_codes_and_completion() -> None:
    for needed in ("GPUFLEET_URL", "GPUFLEET_API_KEY", "GPUFLEET_CONFIG_DIR", "config.toml", "### Exit codes",
                   "--install-completion", "--url", "--api-key", "--version", "--wide"):  # fmt: skip
        assert needed in DOC, needed


def _commands(command: object, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [(prefix.strip() or "gpufleet", command)]
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        out += _commands(sub, f"{prefix} {name}")
    return out


def test_every_command_and_group_has_help() -> None:
    """`gpufleet X --help` (and the list of X's subcommands) says what each one is for."""
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 50
    empty = [
        path for path, c in commands if not (getattr(c, "help", None) or getattr(c, "short_help", None) or "").strip()
    ]
    assert not empty, f"these commands have no help text: {empty}"
