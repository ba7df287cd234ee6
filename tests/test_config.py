"""Settings: GPUFLEET_ prefix, and no default secrets outside development mode."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpufleet.config import Settings


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_PORT", "9999")
    monkeypatch.setenv("GPUFLEET_DATABASE_URL", "postgresql://u@h/db")
    s = Settings()
    assert s.port == 9999 and not s.embedded


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="GPUFLEET_SECRET_KEY"):
        Settings(mode="production")


def test_production_needs_a_runtime_password_for_a_server() -> None:
    with pytest.raises(ValidationError, match="GPUFLEET_DATABASE_RUNTIME_PASSWORD"):
        Settings(mode="production", secret_key="x" * 40, database_url="postgresql://u@h/db")
    ok = Settings(
        mode="production", secret_key="x" * 40, database_url="postgresql://u@h/db", database_runtime_password="pw"
    )
    assert ok.database_runtime_password is not None


def test_development_mode_accepts_defaults() -> None:
    assert Settings(mode="development").embedded
