"""Webhook tests: the API client of tests/api on settings that admit the local receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import app, client, tenant  # noqa: F401 - fixtures shared with the API tests
from tests.webhooks.receiver import Receiver

LOCAL = {"webhook_allow_networks": "127.0.0.0/8", "webhook_timeout_s": 0.5}


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return dict(LOCAL)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()
