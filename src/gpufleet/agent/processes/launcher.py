"""The launcher: one long-lived process that forks every job's supervisor, so that starting a job
costs a fork instead of a Python interpreter's start.

Today's guarantees come from the supervisor (processes/shim.py), not from how it is started: it leads
the job's session, holds the slot lock, ignores SIGTERM and writes the exit file. So the launcher
(``python -I -S processes/shim.py --serve``, a few MB, in its own session) only forks; the child
calls setsid and then runs the very same per-job code. What changes is who the supervisor's parent
is, and with it two things the agent relied on:

* **The process group id must not be reused while the agent may still signal it.** A supervisor
  the agent spawned stays the agent's zombie until reaped. Here the launcher keeps it a zombie
  until the agent, having killed what the job left in its group, sends ``reap PID``. Whether the
  zombie is still held is asked of the pidfd (``pidfd_send_signal(fd, 0)`` fails once it is
  reaped), so a launcher that died and let init reap its children sends the runtime down the
  path it takes for jobs adopted after a restart (group members checked by start time).
* **The supervisor's own wait status** (e.g. SIGKILLed by the job's own ``kill -9 0``, with no exit
  file written) comes back in the answer to ``reap``.

Why not make the agent a child subreaper and let supervisors fall to it by a double fork? Then
every orphan below the agent (a job's daemonised helpers included) would become the agent's
zombie to reap, and a waitpid(-1) would steal the exit statuses asyncio waits for.

The answer to a launch (``started ID PID``) comes from the forked child itself, after its setsid
and before it reads the launch file: once the socket reaches end of file, every fork's answer has
arrived, so a launch still unanswered then never ran and may safely fall back to the per-job shim
(``spawn_shim``). When the agent gives up on a launcher itself (no answer in ``ANSWER_TIMEOUT_S``:
stopped or stuck; or the runtime closes), it shuts its receiving side first, so a child forked
later fails its answer with EPIPE and exits before running anything, then takes the answers
already queued: a job runs once or not at all. The launcher is started on first use and again
after it dies; where it cannot start (no pidfd, spawn failure, or it dies before answering, three
times running) the per-job shim is used instead.

Cost (docs/benchmarks.md, "Job launch cost"): 4.7 ms of CPU per trivial job instead of 17 ms; the
launcher is about 9 MiB resident.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from gpufleet.agent.processes.proc import SHIM_PATH

log = logging.getLogger(__name__)

_GIVE_UP_AFTER = 3  # launchers in a row that died without answering anything
ANSWER_TIMEOUT_S = 30.0  # a fork takes milliseconds; this long means a stopped or stuck launcher


def pid_held(pidfd: int) -> bool:
    """The process behind ``pidfd`` is alive or an unreaped zombie: its pid (a group id) is not free."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class Launcher:
    """The agent's end of the launcher process; everything runs on the agent's event loop."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._sock: socket.socket | None = None
        self._answered = False  # the current launcher answered at least once
        self._failures = 0
        self._disabled = not (enabled and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"))
        self._next_id = 0
        self._starts: dict[bytes, asyncio.Future[int | None]] = {}
        self._reaps: dict[int, asyncio.Future[int | None]] = {}
        self._sending: set[asyncio.Task[bool]] = set()
        self._exited: list[tuple[int, int]] = []  # launchers gone from the socket, not yet reaped: (pid, pidfd)

    @property
    def alive(self) -> bool:
        """A launcher is connected: the zombies of the supervisors it forked are held until reaped."""
        return self._sock is not None

    @property
    def pid(self) -> int | None:
        return self._pid if self.alive else None

    async def launch(self, launch_path: Path, stdout_path: Path, stderr_path: Path, lock_fd: int | None) -> int | None:
        """The pid of the job's supervisor, forked by the launcher; None: no launcher could take it
        (nothing was forked, the launch file is untouched). OSError: the launcher could not fork."""
        sock = self._connect()
        if sock is None:
            return None
        self._next_id += 1
        ident = b"%d" % self._next_id
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fds = [os.open(stdout_path, flags, 0o600)]
        try:
            fds.append(os.open(stderr_path, flags, 0o600))
            if lock_fd is not None:
                fds.append(lock_fd)
            answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            self._starts[ident] = answer
            sent = await self._send(b"launch %s %s" % (ident, os.fsencode(launch_path)), fds)
        finally:
            for fd in fds[:2]:
                os.close(fd)
        if not sent:
            self._starts.pop(ident, None)
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(answer), ANSWER_TIMEOUT_S)
        except TimeoutError:
            stuck = self._pid
            log.warning("job launcher %s did not answer in %g s; replacing it", stuck, ANSWER_TIMEOUT_S)
            self._lost()  # takes the answers already sent; a supervisor forked later dies unanswered
            if stuck is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stuck, signal.SIGKILL)  # our unreaped child: the pid is still its own
            return answer.result()

    def reap(self, pid: int) -> asyncio.Future[int | None]:
        """Let the launcher reap the supervisor ``pid`` (whose group the caller has emptied); its
        exit code as ``os.waitstatus_to_exitcode``, or None when that is lost."""
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        if self._sock is None:
            answer.set_result(None)
            return answer
        self._reaps[pid] = answer
        try:
            self._sock.send(b"reap %d" % pid, socket.MSG_NOSIGNAL)
        except BlockingIOError:  # the launcher is behind
            task = asyncio.create_task(self._send(b"reap %d" % pid, []))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        except OSError:
            self._lost()
        return answer

    async def close(self) -> None:
        """Disconnect: the launcher exits; the supervisors it forked keep running."""
        self._lost()
        deadline = time.monotonic() + 2.0
        while self._exited and time.monotonic() < deadline:
            self._reap_exited()
            if self._exited:
                await asyncio.sleep(0.005)
        for pid, _ in self._exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self._exited:
            self._reap_exited(block=True)

    # -- the process ----------------------------------------------------------------------------

    def _connect(self) -> socket.socket | None:
        if self._sock is not None or self._disabled:
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", str(SHIM_PATH), "--serve"],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
            )
        except OSError as exc:
            ours.close()
            self._gave_up(f"cannot start: {exc}")
            return None
        finally:
            theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            ours.close()  # end of file: it exits
            os.waitpid(pid, 0)
            self._disabled = True
            log.warning("job launcher: no pidfd (%s); every job starts through its own supervisor process", exc)
            return None
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        loop.add_reader(ours, self._on_readable)
        loop.add_reader(pidfd, self._reap_exited)
        self._pid, self._pidfd, self._sock, self._answered = pid, pidfd, ours, False
        return ours

    def _gave_up(self, why: str) -> None:
        self._failures += 1
        if self._failures >= _GIVE_UP_AFTER:
            self._disabled = True
            log.warning("job launcher %s; every job starts through its own supervisor process from now on", why)

    async def _send(self, message: bytes, fds: list[int]) -> bool:
        loop = asyncio.get_running_loop()
        while (sock := self._sock) is not None:
            try:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                sock.sendmsg([message], rights, socket.MSG_NOSIGNAL)
                return True
            except BlockingIOError:  # the launcher is behind: wait until it reads
                writable = loop.create_future()
                loop.add_writer(sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(sock)
            except OSError:
                self._lost()
        return False

    def _on_readable(self) -> None:
        sock = self._sock
        assert sock is not None
        if not self._receive(sock):
            self._lost()

    def _receive(self, sock: socket.socket) -> bool:
        """Handle every answer queued on the socket; False at its end."""
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self._answered = True
            self._failures = 0
            verb, _, rest = data.partition(b" ")
            key, _, value = rest.partition(b" ")
            if verb == b"started":
                self._resolve(self._starts.pop(key, None), int(value))
            elif verb == b"failed":
                answer = self._starts.pop(key, None)
                if answer is not None and not answer.done():
                    answer.set_exception(OSError(value.decode("utf-8", "replace")))
            elif verb == b"reaped":
                self._resolve(self._reaps.pop(int(key), None), None if value == b"none" else int(value))

    @staticmethod
    def _resolve(answer: asyncio.Future[int | None] | None, value: int | None) -> None:
        if answer is not None and not answer.done():
            answer.set_result(value)

    def _lost(self) -> None:
        """The socket is gone (end of file, or closed by us): every answer that will come has come."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock)
        # Refuse further answers first (a supervisor forked from now on gets EPIPE before it runs
        # anything, and exits), then take those already queued: an unanswered launch never runs.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        self._receive(sock)
        sock.close()
        if not self._answered:
            self._gave_up("died before answering")
        assert self._pid is not None and self._pidfd is not None
        self._exited.append((self._pid, self._pidfd))
        self._pid = self._pidfd = None
        for answers in (self._starts, self._reaps):
            for answer in answers.values():
                self._resolve(answer, None)
            answers.clear()
        self._reap_exited()

    def _reap_exited(self, *, block: bool = False) -> None:
        """Reap launchers that have exited (their pidfd is readable then)."""
        for pid, pidfd in list(self._exited):
            if pidfd == self._pidfd:
                continue  # the live one: its end of file comes first
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            if done:
                asyncio.get_running_loop().remove_reader(pidfd)
                os.close(pidfd)
                self._exited.remove((pid, pidfd))
