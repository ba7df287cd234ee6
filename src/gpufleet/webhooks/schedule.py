"""When a failed delivery is tried again: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
20 h and 24 h after each failure, each spread by +-10 % so a receiver's outage does not end in a
thundering herd. ``Retry-After`` (429, 502, 503, 504) replaces the step, bounded."""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime

SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(SCHEDULE_S)
JITTER = 0.1
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})


def next_delay(attempts_made: int, rng: random.Random, *, jitter: float = JITTER) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed ones; None: give up."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    base = SCHEDULE_S[attempts_made]
    return base * (1.0 + rng.uniform(-jitter, jitter))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def bounded_retry_after(retry_after_s: float, *, min_s: float = 1.0, max_s: float = 3600.0) -> float:
    return min(max(retry_after_s, min_s), max_s)
