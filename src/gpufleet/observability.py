"""In-process counters and histograms, exposed in the Prometheus text format at /metrics."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Requests by method, route class and status, with a latency histogram; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, f"{status // 100}xx")] += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def lines(self) -> Iterable[str]:
        yield "# HELP gpufleet_http_requests_total HTTP requests handled, by method and status class."
        yield "# TYPE gpufleet_http_requests_total counter"
        for (method, status), n in sorted(self.requests.items()):
            yield f'gpufleet_http_requests_total{{method="{method}",status="{status}"}} {n}'
        yield "# HELP gpufleet_http_request_duration_seconds Time to answer an HTTP request."
        yield "# TYPE gpufleet_http_request_duration_seconds histogram"
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=False):
            cumulative += n
            yield f'gpufleet_http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}'
        yield f'gpufleet_http_request_duration_seconds_bucket{{le="+Inf"}} {self.latency_count}'
        yield f"gpufleet_http_request_duration_seconds_sum {self.latency_sum:.6f}"
        yield f"gpufleet_http_request_duration_seconds_count {self.latency_count}"


def gauge(name: str, help_text: str, value: float, kind: str = "gauge") -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
