"""Where the CLI finds the server and its key: GPUFLEET_URL / GPUFLEET_API_KEY, else the config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gpufleet.config import default_config_dir

DEFAULT_URL = "http://127.0.0.1:8741"


def config_path() -> Path:
    override = os.environ.get("GPUFLEET_CONFIG_DIR")
    return (Path(override) if override else default_config_dir()) / "config.toml"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str
    api_key: str | None
    source: str


def load() -> ClientConfig:
    data: dict[str, str] = {}
    path = config_path()
    if path.exists():
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        data = {k: str(v) for k, v in raw.items() if isinstance(v, str)}
    url = os.environ.get("GPUFLEET_URL") or data.get("url") or DEFAULT_URL
    key = os.environ.get("GPUFLEET_API_KEY") or data.get("api_key")
    source = "environment" if os.environ.get("GPUFLEET_API_KEY") else str(path) if key else "none"
    return ClientConfig(url=url, api_key=key, source=source)


def save(url: str, api_key: str) -> Path:
    """Write the config file readable by its owner only (the key is a secret)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f'url = "{url}"\napi_key = "{api_key}"\n')
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
