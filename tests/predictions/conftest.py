"""Predictions tests: the API client of tests/api."""

from __future__ import annotations

from tests.api.conftest import app, app_settings, client, tenant  # noqa: F401 - fixtures shared with the API tests
