"""The one cache for what a replica may remember for a bounded time: verified API keys, host
credentials and the JWKS document (services/auth.py, services/host_auth.py).

Each entry carries its own deadline, which the caller takes from ``now()`` *before* it asks the
database: an entry therefore never outlives the answer it holds by more than its time to live,
even when the lookup was slow or raced a revocation. That is what makes "refused within
``auth_cache_ttl_s`` on every replica" a bound rather than an estimate. Full caches drop the
least recently used entry. The clock is injected so tests can move time instead of sleeping.

(``cachetools.TLRUCache`` has the same shape; it is not a dependency, and these 40 lines are
all that is used of it.)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def now(self) -> float:
        return self.clock()

    def get(self, key: K) -> V | None:
        """The value if present and not past its deadline; an expired entry is dropped."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        value, until = hit
        if self.clock() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, *, until: float) -> None:
        """Remember ``value`` until ``until`` (on this cache's clock); a past deadline stores nothing."""
        if until <= self.clock():
            self._entries.pop(key, None)
            return
        self._entries[key] = (value, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
