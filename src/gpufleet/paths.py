"""Where gpufleet keeps its data by default, and why; standard library only (the agent-only install uses it).

As root the XDG home is usually ``/root`` (mode 0700), which the unprivileged PostgreSQL user
cannot traverse, so the default is ``/var/lib/gpufleet`` -- unless ``XDG_DATA_HOME`` was set
explicitly: then it is honoured (db/embedded.py says clearly if postgres cannot reach it).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_DATA_DIR = Path("/var/lib/gpufleet")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_data_dir() -> Path:
    return default_data_dir_why()[0]


def default_data_dir_why() -> tuple[Path, str]:
    """The default data dir and the reason it was chosen (shown by `gpufleet up`)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "gpufleet", "from XDG_DATA_HOME"
    if _is_root():
        return ROOT_DATA_DIR, "the default as root; set GPUFLEET_DATA_DIR or XDG_DATA_HOME to move it"
    return Path.home() / ".local" / "share" / "gpufleet", "the default; set GPUFLEET_DATA_DIR to move it"


def data_dir_why(configured: Path) -> str:
    """Why ``configured`` (Settings.data_dir) is the data dir, in a few words."""
    if os.environ.get("GPUFLEET_DATA_DIR"):
        return "from GPUFLEET_DATA_DIR"
    default, why = default_data_dir_why()
    return why if configured == default else "configured"


def default_state_dir() -> Path:
    """The agent's state dir: ``agent`` under the default data dir (what `gpufleet up`'s own agent uses too)."""
    return default_data_dir() / "agent"
