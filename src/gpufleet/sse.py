"""Writing Server-Sent Events: the server's one formatter (job logs, prediction streams).

Not sse-starlette: its response would change the wire (CRLF line ends, its own ping comments and
headers) and run a task group per stream, while both streams already pace their own keep-alives.
"""

from __future__ import annotations

import re

_EOL = re.compile(r"\r\n|\r|\n")


def message(**fields: str) -> str:
    """One event, its fields in the order given (``id``, ``event``, ``data``, ``retry``); ``data``
    becomes one ``data:`` line per line it has, so a CR or LF in it cannot end the event early."""
    out: list[str] = []
    for name, value in fields.items():
        if name == "data":
            out.extend(f"data: {line}\n" for line in _EOL.split(value))
        else:
            out.append(f"{name}: {value}\n")
    return "".join(out) + "\n"


def comment(text: str) -> str:
    """A comment line (a keep-alive): clients skip it, proxies see traffic."""
    return f": {text}\n\n"
