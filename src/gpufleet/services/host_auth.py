"""Host credentials on the heartbeat path, remembered for a while: each agent heartbeats every
10 s, and looking its credential up each time would cost a transaction of its own.

Safe because the identity is only a hint of (organization, host): the heartbeat's own
transaction re-checks that the host is not revoked and that this credential is still its
credential (``HostIdentity.credential_hash``), so revocation and re-registration take effect
at once on every replica. Refusals are never remembered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gpufleet import security
from gpufleet.db.pool import Database
from gpufleet.errors import Unauthorized
from gpufleet.hosts_domain import HostIdentity
from gpufleet.services.hosts import authenticate_host


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
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[HostIdentity, float]] = OrderedDict()

    async def authenticate(self, credential: str) -> HostIdentity:
        if not security.well_formed(credential, security.HOST_CREDENTIAL):
            raise Unauthorized("malformed host credential")
        key = security.hash_secret(credential)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        identity = await authenticate_host(self.db, credential)
        self._cache[key] = (identity, now + self.ttl_s)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return identity

    def forget(self, identity: HostIdentity) -> None:
        """Drop a credential the database refused (revoked or replaced) so it is looked up again."""
        if identity.credential_hash is not None:
            self._cache.pop(identity.credential_hash, None)
