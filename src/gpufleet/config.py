"""One Settings object for the server, CLI and agent; built once and passed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpufleet.paths import default_data_dir
from gpufleet.webhooks.ssrf import Network, parse_networks

Mode = Literal["development", "production"]


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
    # Seals stored webhook signing secrets (services/webhooks.py, background/webhook_delivery.py).
    secret_key: SecretStr = SecretStr("dev-insecure-secret-key-change-me")

    # Supabase Auth (optional): accept its JWTs as user credentials.
    supabase_url: str | None = None  # e.g. https://<ref>.supabase.co; checks `iss`
    supabase_jwt_secret: SecretStr | None = None  # HS256 project secret
    supabase_jwks_url: str | None = None  # ES256/RS256 keys, e.g. <url>/auth/v1/.well-known/jwks.json

    # Rate limits per API key and per client address, requests per minute (0: off). Counted in
    # PostgreSQL so they hold across replicas (see docs/api.md).
    rate_limit_key_per_minute: int = Field(default=6000, ge=0)
    rate_limit_ip_per_minute: int = Field(default=12000, ge=0)
    rate_limit_sync_s: float = Field(default=1.0, gt=0)

    bootstrap_admin_email: str = "admin@localhost"
    # A verified API key is trusted for this long without asking the database again. Changes made
    # through this replica (revoking a key, removing a member, changing a role) apply at once;
    # other replicas see them within this many seconds. 0 checks every request.
    auth_cache_ttl_s: float = Field(default=2.0, ge=0)
    # The longest any long poll (change feed) waits before answering.
    long_poll_max_s: float = Field(default=30.0, ge=0)

    # Scheduler (docs/scheduler.md, "The scheduler loop")
    scheduler_enabled: bool = True
    scheduler_policy: str = "default"  # a name of scheduler.policies.POLICIES
    scheduler_max_candidates: int | None = Field(default=64, ge=1)  # hosts scored per decision
    scheduler_scan_limit: int | None = Field(default=32, ge=1)  # tightest hosts looked at first
    scheduler_tick_s: float = Field(default=5.0, gt=0)  # a cycle at least this often
    scheduler_poll_s: float = Field(default=0.5, gt=0)  # wake-up polling behind a transaction pooler
    scheduler_batch_size: int = Field(default=1000, ge=1)  # placements per commit transaction
    scheduler_conflict_retries: int = Field(default=3, ge=0)  # fresh-snapshot passes after a lost race
    scheduler_queue_limit: int = Field(default=100_000, ge=1)  # pending jobs considered per cycle
    scheduler_starvation_after_s: float = Field(default=300.0, ge=0)  # then a host is held for the job
    scheduler_max_reservations: int = Field(default=4, ge=0)  # hosts held per organization at once
    scheduler_reason_refresh_s: float = Field(default=30.0, ge=0)  # a reason whose counts alone changed
    scheduler_leader_retry_s: float = Field(default=1.5, gt=0)
    scheduler_lease_s: float = Field(default=10.0, gt=0)  # leader lease behind a transaction pooler

    # /metrics: when set, a scrape must send `Authorization: Bearer <token>` (docs/observability.md)
    metrics_token: SecretStr | None = None
    metrics_fleet_interval_s: float = Field(default=15.0, gt=0)  # the fleet gauges' file, several workers

    log_level: str = "info"
    log_json: bool = False

    # Hosts, heartbeats and GPU health (docs/hosts.md)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_timeout_s: float = Field(default=50.0, gt=0)  # judged by the database clock
    heartbeat_max_samples: int = Field(default=10_000, ge=1)
    heartbeat_max_gpus: int = Field(default=64, ge=1)
    heartbeat_max_clock_skew_s: int = Field(default=86_400, ge=1)  # sample timestamps vs the database clock
    gpu_temperature_limit_c: float = 90.0
    foreign_memory_threshold_mb: int = Field(default=512, ge=0)
    liveness_interval_s: float = Field(default=10.0, gt=0)
    # GPU metrics retention: raw samples in daily partitions, hourly rollups for long ranges
    metrics_retention_days: int = Field(default=7, ge=1)
    rollup_retention_days: int = Field(default=400, ge=1)
    rollup_delay_s: int = Field(default=300, ge=0)  # an hour is rolled up this long after it ends
    metrics_max_points: int = Field(default=10_000, ge=1)
    retention_interval_s: float = Field(default=600.0, gt=0)

    # Running the work: assignments, logs, cancel and timeouts, host loss (docs/execution.md)
    job_log_cap_bytes: int = Field(default=16 * 1024 * 1024, ge=0)  # stored per job attempt
    job_log_batch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1)  # one upload
    # The HTTP body limit of a log upload (POST /v1/agent/jobs/{id}/logs), JSON with base64 bytes:
    # 4 MiB holds ~3 MiB of output; every other route keeps max_body_bytes.
    log_upload_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    cancel_grace_s: float = Field(default=30.0, ge=0)  # SIGTERM, then SIGKILL after this
    kill_report_margin_s: float = Field(default=30.0, ge=0)  # then the server ends a silent agent's job
    host_loss_grace_s: float = Field(default=60.0, ge=0)  # unreachable this long: its work is requeued
    requeue_rate_per_minute: int = Field(default=100, ge=1)  # host-loss requeues per organization
    assignment_poll_max_s: float = Field(default=30.0, ge=0)  # longest assignment long-poll
    execution_poll_s: float = Field(default=0.5, gt=0)  # polling behind a transaction pooler
    reaper_interval_s: float = Field(default=5.0, gt=0)
    reaper_batch_size: int = Field(default=500, ge=1)  # jobs handled per reaper pass and kind

    # Predictions (docs/predictions.md)
    autoscaler_interval_s: float = Field(default=1.0, gt=0)  # a pass over the deployments this often
    autoscaler_scale_up_after_s: float = Field(default=1.0, ge=0)  # queue age before more replicas start
    autoscaler_batch_size: int = Field(default=500, ge=1)  # deployments looked at per pass

    # Costs (docs/costs.md): hourly cost rows of running work and budget threshold events
    costs_interval_s: float = Field(default=60.0, gt=0)
    # Events and webhooks (docs/webhooks.md, docs/events.md)
    events_retention_days: int = Field(default=30, ge=1)
    events_retention_batch: int = Field(default=5000, ge=1)  # rows per delete statement
    webhook_delivery_enabled: bool = True  # the delivery worker in this replica
    # CIDRs (comma-separated) a webhook may reach besides global unicast addresses: on-premises receivers.
    webhook_allow_networks: str = ""
    webhook_timeout_s: float = Field(default=10.0, gt=0)  # one attempt, connect to last byte
    webhook_batch_size: int = Field(default=200, ge=1)  # deliveries claimed per round
    webhook_concurrency: int = Field(default=64, ge=1)  # attempts in flight per replica
    webhook_endpoint_concurrency: int = Field(default=8, ge=1)  # in flight per endpoint (1: strict order)
    webhook_poll_s: float = Field(default=1.0, gt=0)  # look for due retries at least this often
    webhook_retry_after_max_s: float = Field(default=3600.0, ge=1)
    # Models and files (docs/predictions.md): the cap of an uploaded file and how long it is kept
    files_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    files_retention_s: int = Field(default=86_400, ge=60)  # default expires_at of an upload
    files_retention_interval_s: float = Field(default=300.0, gt=0)  # the sweep of expired files
    webhook_disable_after_s: float = Field(default=5 * 86400.0, gt=0)  # failing this long: disabled
    webhook_rotation_overlap_s: float = Field(default=86400.0, ge=0)  # both secrets sign this long
    # `gpufleet up --notify-stderr`: print admin notifications (docs/events.md, "admin") to stderr.
    notify_stderr: bool = False

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
        parse_networks(self.webhook_allow_networks)  # a bad CIDR is refused at start, naming it
        return self

    @property
    def webhook_networks(self) -> list[Network]:
        return parse_networks(self.webhook_allow_networks)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def embedded_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"
