"""Strict tools are part of the suite: ruff (lint and format) and mypy must be clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    paths = [p for p in ("src", "tests", "bench", "scripts") if (ROOT / p).is_dir()]
    out = subprocess.run([str(BIN / "ruff"), "check", *paths], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean() -> None:
    paths = [p for p in ("src", "tests", "bench", "scripts") if (ROOT / p).is_dir()]
    out = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean() -> None:
    out = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
