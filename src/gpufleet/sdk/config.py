"""Where a client finds the server and its key, the same for the CLI and the SDK.

In order: what the caller passes (``--url``/``--api-key``, ``Client(url, api_key)``), then
``GPUFLEET_URL``/``GPUFLEET_API_KEY``, then the config file (``$GPUFLEET_CONFIG_DIR/config.toml``,
default ``~/.config/gpufleet/config.toml``, written by the first ``gpufleet up``), then the local default URL.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from gpufleet.config import default_config_dir

DEFAULT_URL = "http://127.0.0.1:8741"


def config_path() -> Path:
    override = os.environ.get("GPUFLEET_CONFIG_DIR")
    return (Path(override) if override else default_config_dir()) / "config.toml"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str
    api_key: str | None
    source: str  # where the key came from: "argument", "environment", the file's path, or "none"


def _read_file(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    return {k: v for k, v in raw.items() if isinstance(v, str)}


def load(url: str | None = None, api_key: str | None = None) -> ClientConfig:
    """The URL and key to use; arguments win over the environment, which wins over the file."""
    path = config_path()
    env_url, env_key = os.environ.get("GPUFLEET_URL"), os.environ.get("GPUFLEET_API_KEY")
    data = {} if (url or env_url) and (api_key or env_key) else _read_file(path)
    key = api_key or env_key or data.get("api_key")
    source = "argument" if api_key else "environment" if env_key else str(path) if key else "none"
    return ClientConfig(url=url or env_url or data.get("url") or DEFAULT_URL, api_key=key, source=source)


def save(url: str, api_key: str) -> Path:
    """Write the config file readable by its owner only (the key is a secret)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump({"url": url, "api_key": api_key}, fh)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
