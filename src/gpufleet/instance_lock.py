"""One running instance per directory: an exclusive ``flock`` on a lock file, held for the process's life.

The kernel releases a flock when its holder dies, kill -9 included, so a stale lock is never
mistaken for a live one and needs no clean-up: the next instance simply takes it. The file also
records who holds it (pid, URL), so the refusal can name the running instance. The descriptor
is not inherited (Python opens files close-on-exec), so the jobs, the agent and postgres that an
instance starts never keep its lock alive after it is gone. Standard library only: the agent uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any


class InstanceBusy(Exception):
    """Another live process holds the lock; ``holder`` is what it wrote (pid, url, ...), possibly empty."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder

    def describe(self) -> str:
        """``pid 123, http://127.0.0.1:8741`` (what is known of the holder)."""
        parts = []
        if "pid" in self.holder:
            parts.append(f"pid {self.holder['pid']}")
        if self.holder.get("url"):
            parts.append(str(self.holder["url"]))
        return ", ".join(parts) or "pid unknown"


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, dir_mode: int = 0o700, **info: Any) -> None:
        """Take the lock and record ``info`` (plus our pid) in it; InstanceBusy when a live process holds it.

        ``dir_mode``: for the directory when it does not exist yet.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise InstanceBusy(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.update(**info)

    def update(self, **info: Any) -> None:
        """Rewrite what the lock file says about us (e.g. the URL once it is known)."""
        assert self._fd is not None, "update() before acquire()"
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read(fd: int) -> dict[str, Any]:
    """What the holder wrote; {} when it has not written yet (or the file is damaged)."""
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode()) if raw else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
