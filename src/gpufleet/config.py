"""One Settings object for the server, CLI and agent; built once and passed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["development", "production"]


def default_data_dir() -> Path:
    """Where the embedded database and local state live.

    As root the XDG home is usually ``/root`` (mode 0700), which the unprivileged
    PostgreSQL user cannot traverse; a system location is used instead so that no
    permission outside gpufleet's own directory ever has to change.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/gpufleet")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "gpufleet"


def default_config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "gpufleet"


class Settings(BaseSettings):
    """Every knob of gpufleet, read from ``GPUFLEET_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="GPUFLEET_", extra="ignore", frozen=True)

    mode: Mode = "development"
    data_dir: Path = Field(default_factory=default_data_dir)
    config_dir: Path = Field(default_factory=default_config_dir)

    # Database. Unset: the embedded PostgreSQL in data_dir.
    database_url: SecretStr | None = None
    # The runtime role request handling connects as. Derived from database_url when unset.
    database_runtime_url: SecretStr | None = None
    database_runtime_password: SecretStr | None = None
    database_pool_min: int = Field(default=2, ge=1)
    database_pool_max: int = Field(default=20, ge=1)
    # Transaction poolers (Supabase port 6543, pgbouncer in transaction mode) cannot keep
    # prepared statements or LISTEN; set this to true there.
    database_transaction_pooler: bool = False
    database_apply_migrations: bool = True

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(default=8741, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    public_url: str | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    secret_key: SecretStr = SecretStr("dev-insecure-secret-key-change-me")

    log_level: str = "info"
    log_json: bool = False

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.mode == "production":
            secret = self.secret_key.get_secret_value()
            if not secret or secret.startswith("dev-insecure") or len(secret) < 32:
                raise ValueError(
                    "GPUFLEET_SECRET_KEY must be set to a random value of at least 32 characters "
                    "in production mode (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                )
            pw = self.database_runtime_password
            if (
                self.database_url is not None
                and self.database_runtime_url is None
                and (pw is None or not pw.get_secret_value())
            ):
                raise ValueError(
                    "GPUFLEET_DATABASE_RUNTIME_PASSWORD (or GPUFLEET_DATABASE_RUNTIME_URL) must be set "
                    "in production mode when GPUFLEET_DATABASE_URL points at a server"
                )
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def embedded_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"
