"""Host credentials, remembered per replica: each agent calls several times a second at peak
(logs, long polls, heartbeats), and a lookup each time would cost a transaction of its own
(measured: ~40% of the database statements of a heartbeat load).

Safe because what is remembered is only a hint of (organization, host): every agent call
(heartbeat, assignments, started, exit, logs, reconcile) checks again, inside its own
transaction, that the host is not revoked and that this credential is still its credential
(``services.hosts.ensure_current``), so a revocation or re-registration is final at once on
every replica, whatever any cache holds. The replica that revokes, removes or re-registers a
host also forgets its entries (``forget_all``), so the refusal there costs no wasted work.
Refusals are never remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostIdentity
from gpufleet.services.hosts import credential_hash, host_of_credential
from gpufleet.ttl_cache import TTLCache


class HostAuthenticator:
    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._cache: TTLCache[bytes, HostIdentity] = TTLCache(max_entries=max_entries, clock=clock)

    async def authenticate(self, credential: str) -> HostIdentity:
        key = credential_hash(credential)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        until = self._cache.now() + self.ttl_s
        identity = await host_of_credential(self.db, key)
        self._cache.put(key, identity, until=until)
        return identity

    def forget(self, identity: HostIdentity) -> None:
        """Drop a credential the database refused (revoked or replaced) so it is looked up again."""
        if identity.credential_hash is not None:
            self._cache.pop(identity.credential_hash)

    def forget_all(self) -> None:
        """After a revocation, removal or re-registration through this replica: refused here at once."""
        self._cache.clear()
