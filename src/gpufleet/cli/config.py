"""Where the CLI finds the server and its key: the SDK's rules (gpufleet.sdk.config), shared by both."""

from __future__ import annotations

from gpufleet.sdk.config import DEFAULT_URL, ClientConfig, config_path, load, save

__all__ = ["DEFAULT_URL", "ClientConfig", "config_path", "load", "save"]
