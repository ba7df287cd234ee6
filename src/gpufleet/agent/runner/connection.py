"""The agent's end of a worker's socket (runner/worker.py): connect, check who answers, JSON lines.

The socket is a path in the replica's working directory, which belongs to the job's user: before
saying anything the agent checks, with SO_PEERCRED, that the process at the other end is in the
replica job's process group and runs as the job's user, so a job cannot point the agent (root) at
another socket of the machine. A long path is reached through ``/proc/self/fd`` (Unix socket paths
are limited to 107 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpufleet.backoff import Backoff

MAX_LINE_BYTES = 256 * 1024 * 1024  # one message from the worker (outputs carry files as base64)
_SUN_PATH_MAX = 100


class WorkerGone(Exception):
    """The worker cannot be reached (not listening yet, exited, or not who it should be)."""


class WorkerConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False

    @classmethod
    async def open(cls, socket_path: Path, *, pgid: int | None, uid: int | None) -> WorkerConnection:
        """Connect once; ``WorkerGone`` when nobody listens there or the peer is not the replica's worker."""
        dir_fd = os.open(socket_path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = str(socket_path)
            if len(path.encode()) > _SUN_PATH_MAX:
                path = f"/proc/self/fd/{dir_fd}/{socket_path.name}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, path)
            except OSError as exc:
                sock.close()
                raise WorkerGone(f"cannot connect to {socket_path}: {exc.strerror or exc}") from None
        finally:
            os.close(dir_fd)
        try:
            _check_peer(sock, pgid=pgid, uid=uid)
        except WorkerGone:
            sock.close()
            raise
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE_BYTES)
        return cls(reader, writer)

    @classmethod
    async def wait_open(
        cls, socket_path: Path, *, pgid: int | None, uid: int | None, alive: Callable[[], bool], timeout_s: float
    ) -> WorkerConnection:
        """Connect as soon as the worker listens (it binds its socket first thing), while ``alive()``."""
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(0.005, cap=0.1)
        while True:
            try:
                return await cls.open(socket_path, pgid=pgid, uid=uid)
            except (WorkerGone, FileNotFoundError, NotADirectoryError) as exc:
                if not alive() or time.monotonic() > deadline:
                    raise WorkerGone(str(exc)) from None
            await asyncio.sleep(backoff.next())

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise WorkerGone("the connection to the worker is closed")
        try:
            self.writer.write((json.dumps(message) + "\n").encode())
            if self.writer.transport.get_write_buffer_size() > 1 << 20:
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.closed = True
            raise WorkerGone(f"the worker's connection broke: {exc}") from None

    def send_nowait(self, message: dict[str, Any]) -> None:
        """For small control messages (ack, cancel) from callbacks."""
        if not self.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write((json.dumps(message) + "\n").encode())

    async def receive(self) -> dict[str, Any] | None:
        """The next message; None at the end (the worker closed or died)."""
        try:
            line = await self.reader.readline()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            line = b""
        if not line:
            self.closed = True
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return {"type": "invalid", "text": line[:200].decode("utf-8", "replace")}
        return message if isinstance(message, dict) else {"type": "invalid", "text": str(message)[:200]}

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


def _check_peer(sock: socket.socket, *, pgid: int | None, uid: int | None) -> None:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, peer_uid, _ = struct.unpack("3i", creds)
    want_uid = os.getuid() if uid is None else uid
    if peer_uid != want_uid:
        raise WorkerGone(f"the socket's owner is uid {peer_uid}, not the replica's user ({want_uid})")
    if pgid is not None:
        try:
            group = os.getpgid(pid)
        except OSError:
            raise WorkerGone("the process behind the socket is gone") from None
        if group != pgid:
            raise WorkerGone(f"the process behind the socket ({pid}) is not the replica's worker")
