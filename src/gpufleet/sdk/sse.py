"""Reading Server-Sent Events: the SDK's one parser, for job logs and prediction streams.

Lines end at CR, LF or CRLF only (httpx's ``iter_lines`` also cuts at U+2028 and U+0085, which
JSON and model output leave raw). Not httpx-sse: its 0.4 decoder keeps the last ``id`` and then
dispatches an empty event after every keep-alive comment, which callers would see as events.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str  # "message" when the server named none
    data: str
    id: str | None


class _Lines:
    """Text chunks in, whole lines out (a CRLF cut between two chunks ends one line)."""

    def __init__(self) -> None:
        self.carry: list[str] = []
        self.after_cr = False

    def feed(self, text: str) -> list[str]:
        if self.after_cr and text.startswith("\n"):
            text = text[1:]  # the rest of a CRLF cut in two
        self.after_cr = text.endswith("\r")
        *lines, rest = _EOL.split(text)
        if lines:
            lines[0] = "".join(self.carry) + lines[0]
            self.carry = []
        if rest:
            self.carry.append(rest)
        return lines


class _Events:
    """Lines in, an event at each blank line after ``data``; comments and ``retry`` skipped."""

    def __init__(self) -> None:
        self.event, self.data = "message", list[str]()
        self.id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        if not line:
            done = ServerEvent(self.event, "\n".join(self.data), self.id) if self.data else None
            self.event, self.id, self.data = "message", None, []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def events(texts: Iterable[str]) -> Iterator[ServerEvent]:
    """The events of a stream given as text chunks (``response.iter_text()``)."""
    lines, decoder = _Lines(), _Events()
    for text in texts:
        for line in lines.feed(text):
            if (event := decoder.feed(line)) is not None:
                yield event


async def aevents(texts: AsyncIterator[str]) -> AsyncIterator[ServerEvent]:
    """``events`` for an async stream (``response.aiter_text()``)."""
    lines, decoder = _Lines(), _Events()
    async for text in texts:
        for line in lines.feed(text):
            if (event := decoder.feed(line)) is not None:
                yield event
