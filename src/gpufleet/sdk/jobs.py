"""SDK methods: Jobs and quotas."""

from __future__ import annotations

from gpufleet.sdk.base import BaseClient


class JobsMixin(BaseClient):
    pass
