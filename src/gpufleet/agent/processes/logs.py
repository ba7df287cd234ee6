"""Job output: a bounded, acknowledged chunk queue per job, fed by following the job's log files.

A job writes stdout and stderr straight into files under the runtime's state directory (so output
survives an agent restart and a slow agent never blocks or SIGPIPEs the job). A LogFollower reads new
bytes from both files and appends them to the job's LogBuffer, which cuts them into ordered
``LogChunk``s of at most ``chunk_bytes``.

Delivery is at-least-once with a cursor:

* ``drain(max_bytes)`` returns chunks starting at the oldest *unacknowledged* one. A chunk handed
  out is frozen: a re-send after a failed upload carries the same seq, offset and bytes.
* ``ack(seq)`` acknowledges every handed-out chunk up to ``seq``; only then is it forgotten.
* ``seq`` orders chunks (across both streams) within one runtime's life and is the ack handle;
  ``(stream, offset)`` identifies the bytes for good, so the receiver can drop duplicates.

At most ``buffer_bytes`` of unacknowledged output is kept. Beyond that the OLDEST data goes, and a
marker chunk (``data=b""``, ``dropped_bytes=n``, ``offset`` where the gap starts) stands in for it,
so the receiver sees exactly which byte ranges were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpufleet.backoff import Backoff

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class LogChunk:
    job_id: str
    attempt: int
    seq: int
    stream: Stream
    data: bytes
    offset: int  # byte offset of data (or of the gap, for a marker) within the stream
    dropped_bytes: int = 0  # > 0: a marker for bytes [offset, offset + dropped_bytes) that were lost

    @property
    def is_marker(self) -> bool:
        return self.dropped_bytes > 0


@dataclass(slots=True)
class _Item:
    seq: int
    stream: Stream
    offset: int
    data: bytearray
    dropped: int = 0
    sent: bool = False

    @property
    def end(self) -> int:
        return self.offset + len(self.data) + self.dropped


class LogBuffer:
    """The chunk queue of one job attempt. Pure bookkeeping: no I/O, no clock."""

    def __init__(
        self,
        job_id: str,
        attempt: int,
        *,
        chunk_bytes: int,
        buffer_bytes: int,
        next_seq: int = 1,
        offsets: Mapping[Stream, int] | None = None,
    ) -> None:
        if not 0 < chunk_bytes <= buffer_bytes:
            raise ValueError(f"need 0 < chunk_bytes <= buffer_bytes, got {chunk_bytes} and {buffer_bytes}")
        self.job_id, self.attempt = job_id, attempt
        self.chunk_bytes, self.buffer_bytes = chunk_bytes, buffer_bytes
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._next_seq = next_seq
        start = {s: (offsets or {}).get(s, 0) for s in STREAMS}
        self._next_offset: dict[Stream, int] = dict(start)
        self.acked_offsets: dict[Stream, int] = dict(start)
        self.acked_seq = next_seq - 1
        self.dropped_total = 0

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    @property
    def empty(self) -> bool:
        return not self._items

    def next_offset(self, stream: Stream) -> int:
        return self._next_offset[stream]

    def _seq(self) -> int:
        self._next_seq += 1
        return self._next_seq - 1

    def append(self, stream: Stream, data: bytes) -> None:
        """Add the next bytes of ``stream``; drops the oldest data if the bound is exceeded."""
        offset, pos = self._next_offset[stream], 0
        while pos < len(data):
            last = self._items[-1] if self._items else None
            if (
                last is not None
                and last.stream == stream
                and not last.sent
                and not last.dropped
                and len(last.data) < self.chunk_bytes
            ):
                n = min(self.chunk_bytes - len(last.data), len(data) - pos)
                last.data += data[pos : pos + n]
            else:
                n = min(self.chunk_bytes, len(data) - pos)
                self._items.append(_Item(self._seq(), stream, offset, bytearray(data[pos : pos + n])))
            pos += n
            offset += n
            self._bytes += n
        self._next_offset[stream] = offset
        while self._bytes > self.buffer_bytes:
            self._drop_oldest()

    def skip(self, stream: Stream, n: int) -> None:
        """Record that the next ``n`` bytes of ``stream`` will never be read (they would be dropped)."""
        offset = self._next_offset[stream]
        last = self._items[-1] if self._items else None
        if last is not None and last.stream == stream and last.dropped and not last.sent and last.end == offset:
            last.dropped += n
        else:
            self._items.append(_Item(self._seq(), stream, offset, bytearray(), dropped=n))
        self._next_offset[stream] = offset + n
        self.dropped_total += n

    def _drop_oldest(self) -> None:
        # Everything before the oldest data item is a marker; items stay sorted by seq.
        i = next(k for k, it in enumerate(self._items) if not it.dropped)
        item = self._items[i]
        n = len(item.data)
        self._bytes -= n
        self.dropped_total += n
        # The marker keeps the chunk's seq: if the chunk was handed out, an ack of that seq stays exact.
        marker = _Item(item.seq, item.stream, item.offset, bytearray(), dropped=n, sent=item.sent)
        self._items[i] = marker
        if marker.sent:
            return
        for j in range(i - 1, -1, -1):  # absorb earlier unsent markers of the same gap
            prev = self._items[j]
            if prev.stream != marker.stream:
                continue
            if not (prev.dropped and not prev.sent and prev.end == marker.offset):
                break
            marker.offset = prev.offset
            marker.dropped += prev.dropped
            del self._items[j]
            i -= 1
        if i + 1 < len(self._items):  # a skip() gap right after it: one marker for the whole gap
            nxt = self._items[i + 1]
            if nxt.stream == marker.stream and nxt.dropped and not nxt.sent and nxt.offset == marker.end:
                nxt.offset = marker.offset
                nxt.dropped += marker.dropped
                del self._items[i]

    def drain(self, max_bytes: int) -> list[LogChunk]:
        """Chunks from the oldest unacknowledged one, up to ``max_bytes`` of data (at least one)."""
        out: list[LogChunk] = []
        total = 0
        for it in self._items:
            if out and total + len(it.data) > max_bytes:
                break
            it.sent = True
            total += len(it.data)
            out.append(LogChunk(self.job_id, self.attempt, it.seq, it.stream, bytes(it.data), it.offset, it.dropped))
        return out

    def ack(self, seq: int) -> bool:
        """Forget handed-out chunks up to ``seq``; True when anything was acknowledged."""
        changed = False
        while self._items and self._items[0].seq <= seq and self._items[0].sent:
            it = self._items.popleft()
            self._bytes -= len(it.data)
            self.acked_offsets[it.stream] = it.end
            self.acked_seq = it.seq
            changed = True
        return changed


class LogFollower:
    """Follows a job's stdout/stderr files from given offsets into its LogBuffer.

    Polls (no inotify): every ``min_poll_s`` while output flows, backing off to ``max_poll_s`` when
    idle. After ``process_exited()`` it reads to the end of both files and sets ``finished``.
    """

    def __init__(
        self,
        buffer: LogBuffer,
        paths: Mapping[Stream, Path],
        *,
        read_bytes: int = 1 << 20,
        min_poll_s: float = 0.01,
        max_poll_s: float = 0.25,
    ) -> None:
        self.buffer = buffer
        self.paths = dict(paths)
        self.read_bytes = read_bytes
        self.min_poll_s, self.max_poll_s = min_poll_s, max_poll_s
        self.finished = asyncio.Event()
        self.data_ready = asyncio.Event()
        self._exited = asyncio.Event()

    def process_exited(self) -> None:
        self._exited.set()

    def _open(self) -> dict[Stream, int]:
        fds: dict[Stream, int] = {}
        for stream, path in self.paths.items():
            with contextlib.suppress(FileNotFoundError):
                fds[stream] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fds

    def _read_some(self, fds: Mapping[Stream, int]) -> int:
        total = 0
        buf = self.buffer
        for stream, fd in fds.items():
            pos = buf.next_offset(stream)
            size = os.fstat(fd).st_size
            if size - pos > buf.buffer_bytes:
                buf.skip(stream, size - pos - buf.buffer_bytes)
                pos = buf.next_offset(stream)
            if size > pos:
                data = os.pread(fd, min(self.read_bytes, size - pos), pos)
                if data:
                    buf.append(stream, data)
                    total += len(data)
        if total:
            self.data_ready.set()
        return total

    async def run(self) -> None:
        fds = self._open()
        try:
            poll = Backoff(self.min_poll_s, cap=self.max_poll_s)  # quiet output: poll less and less often
            while True:
                exited = self._exited.is_set()  # before reading: what the job wrote is then all there
                if self._read_some(fds):
                    poll.reset()
                    await asyncio.sleep(0)
                    continue
                if exited:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), poll.next())
        except OSError as exc:  # e.g. the state directory's disk went away: the job runs on regardless
            log.warning("following the output of job %s failed: %s", self.buffer.job_id, exc)
        finally:
            for fd in fds.values():
                os.close(fd)
            self.finished.set()
            self.data_ready.set()


def tail_text(paths: Mapping[Stream, Path], max_bytes: int) -> str:
    """The last ``max_bytes`` of each file (stdout, then stderr), decoded; missing files are skipped."""
    parts = []
    for path in paths.values():
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                data = f.read(max_bytes)
        except OSError:
            continue
        if data.strip():
            parts.append(data.decode("utf-8", "replace"))
    return "".join(parts)
