"""SDK methods: Hosts, GPUs, metrics and join tokens."""

from __future__ import annotations

from gpufleet.sdk.base import BaseClient


class HostsMixin(BaseClient):
    pass
