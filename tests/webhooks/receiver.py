"""A real HTTP receiver on 127.0.0.1 for webhook tests: it records every request and answers by path.

Paths: ``/ok`` 200, ``/fail`` 500, ``/gone`` 410, ``/busy`` 429 with ``Retry-After``, ``/hang``
(sleeps longer than any test timeout), ``/slow`` (200 after ``slow_s``), ``/redirect`` 302 to ``/ok``. ``fail_first`` makes ``/flaky``
answer 500 that many times, then 200.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    retry_after: str = "7"
    fail_first: int = 0
    hang_s: float = 5.0
    slow_s: float = 0.2
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body, time.time()))
                    flaky = self.path == "/flaky" and receiver.fail_first > 0
                    if flaky:
                        receiver.fail_first -= 1
                status, extra = {
                    "/ok": (200, {}),
                    "/fail": (500, {}),
                    "/gone": (410, {}),
                    "/busy": (429, {"Retry-After": receiver.retry_after}),
                    "/redirect": (302, {"Location": "/ok"}),
                    "/flaky": (500 if flaky else 204, {}),
                    "/slow": (200, {}),
                }.get(self.path.split("?")[0], (404, {}))
                if self.path == "/slow":
                    time.sleep(receiver.slow_s)
                if self.path == "/hang":
                    time.sleep(receiver.hang_s)
                    status = 200
                answer = b"" if status == 204 else f'{{"status": {status}}}'.encode() + b" " * 5000
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]
