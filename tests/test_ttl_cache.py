"""The one TTL cache behind the API-key, host-credential and JWKS caches."""

from __future__ import annotations

import pytest

from gpufleet.ttl_cache import TTLCache


def test_entries_expire_at_their_own_deadline_and_full_caches_drop_the_least_recent() -> None:
    now = [0.0]
    cache: TTLCache[str, int] = TTLCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", 1, until=2.0)
    cache.put("b", 2, until=5.0)
    now[0] = 1.999
    assert cache.get("a") == 1 and cache.get("b") == 2
    now[0] = 2.0
    assert cache.get("a") is None and len(cache) == 1  # expired entries are dropped on sight
    cache.put("a", 1, until=10.0)
    assert cache.get("b") == 2  # "b" is now the most recently used
    cache.put("c", 3, until=10.0)
    assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
    # A deadline already past stores nothing (a zero time to live turns caching off).
    cache.put("d", 4, until=now[0])
    assert cache.get("d") is None
    cache.pop("b")
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(max_entries=0)
