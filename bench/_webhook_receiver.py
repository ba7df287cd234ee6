"""A minimal, fast webhook receiver for bench/webhooks.py, run as its own process.

Answers every POST with 200 (or 503 while the file ``<log>.down`` exists) and appends one line per
request to ``<log>``: arrival time, webhook-id, the payload's timestamp (the event's creation).

    python bench/_webhook_receiver.py PORT LOGFILE
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
DOWN = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


async def main(port: int, log_path: Path) -> None:
    down = str(log_path) + ".down"
    out = log_path.open("a", buffering=1)  # line-buffered: the bench reads it while it runs

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                headers = {}
                for line in head.decode().split("\r\n")[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if os.path.exists(down):  # noqa: ASYNC240 - one stat, the outage switch
                    writer.write(DOWN)
                else:
                    ts = json.loads(body).get("timestamp", "")
                    out.write(f"{arrived:.6f} {headers.get('webhook-id', '-')} {ts}\n")
                    writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        try:
            await server.serve_forever()
        finally:
            out.flush()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
