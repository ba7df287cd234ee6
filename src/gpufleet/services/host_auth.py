"""Host credentials, remembered per replica for ``auth_cache_ttl_s`` (2 s): each agent calls
several times a second at peak (logs, long polls, heartbeats), and a lookup each time would
cost a transaction of its own.

The bound is the same as for API keys: a revoked or replaced credential is refused at once by
the replica that revoked it or re-registered the host (``forget_all``), and within the time to
live by every other. Calls that change state or hand out a job's secrets (assignments,
started, exit, reconcile, heartbeat) check the credential again inside their own transaction
(``services.hosts.ensure_current``), so on those it is refused at once everywhere. Refusals are
never remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.errors import Unauthorized
from gpufleet.hosts_domain import HostIdentity
from gpufleet.services.hosts import authenticate_host
from gpufleet.ttl_cache import TTLCache


class HostAuthenticator:
    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 2.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._cache: TTLCache[bytes, HostIdentity] = TTLCache(max_entries=max_entries, clock=clock)

    async def authenticate(self, credential: str) -> HostIdentity:
        if not security.well_formed(credential, security.HOST_CREDENTIAL):
            raise Unauthorized("malformed host credential")
        key = security.hash_secret(credential)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        # The deadline counts from before the lookup: the answer is never kept longer than ttl_s.
        until = self._cache.now() + self.ttl_s
        identity = await authenticate_host(self.db, credential)
        self._cache.put(key, identity, until=until)
        return identity

    def forget(self, identity: HostIdentity) -> None:
        """Drop a credential the database refused (revoked or replaced) so it is looked up again."""
        if identity.credential_hash is not None:
            self._cache.pop(identity.credential_hash)

    def forget_all(self) -> None:
        """After a revocation, removal or re-registration through this replica: refused here at once."""
        self._cache.clear()
