"""The README's two set-up commands stay true: CI runs exactly the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|shell)\n(.*?)```", text, re.S)
    assert block, "README.md must open with a shell block holding the two set-up commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands() -> None:
    commands = _commands()
    assert len(commands) == 2
    assert commands[0].endswith("gpufleet up")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M)
    assert m, ".ci/run must define TEST_COMMAND"
    assert m.group(1) == _commands()[1]
