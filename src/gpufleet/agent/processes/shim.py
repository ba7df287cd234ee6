"""The supervisor shim: leader of every job's process group; records the job's exit status in a file.

ProcessRuntime starts ``python -I -S processes/shim.py LAUNCH_FILE`` in a new session, with stdin on
/dev/null and stdout/stderr on the job's log files. The shim reads (and deletes, since it may hold
secrets) the launch file, starts the job with posix_spawn, waits for it and writes the exit file.
Because the shim, not the agent, is the job's parent, the exit status survives an agent restart.

It ignores SIGTERM/SIGINT/SIGHUP (with a handler, so the job still gets default dispositions), so a
SIGTERM to the process group stops the job while the shim lives on to record how the job ended. Only
SIGKILL stops the shim, and then the agent knows it sent one. A signal to the group that comes
before the job exists (a cancel right after the start) is held and passed on to the job once it
is spawned, so it is not lost (and the job not killed only after the grace period). One that comes
while the job is being spawned may reach the job twice: directly, and passed on.

With a job user (the agent runs as root), the shim stays root, so the job can neither signal it
nor touch the exit file, and starts the job with fork: the child sets the groups, gid and uid,
umask 077, enters the working directory as that user, and execs; an error before the exec
comes back through a close-on-exec pipe. File descriptor 3, when open, is the job's slot lock
(processes/users.py): the shim holds it for the job's life and never passes it on.

This file runs by path under ``-I -S`` (no site, no PYTHON* variables, no gpufleet import) so a
job's environment cannot break it and it starts in a few milliseconds: keep it to ``os``, ``sys``
and ``_signal``, without json, subprocess or enum.

Launcher mode, ``python -I -S processes/shim.py --serve`` (processes/launcher.py starts it once): fd 0 is
an AF_UNIX SOCK_SEQPACKET socket to the agent. Requests, one message each: ``launch ID LAUNCH_FILE``
with the job's stdout, stderr and, optionally, slot lock attached as SCM_RIGHTS; ``reap PID``.
For a launch the launcher forks; the child calls setsid, answers ``started ID PID`` itself (so the
answer comes even if the launcher dies right after the fork), takes /dev/null, the log files and
the lock as fds 0-3, closes everything else and then is exactly the per-job shim above (``main``).
Supervisors stay unreaped zombies until the agent, having killed what the job left in its group,
asks ``reap PID``: the answer is ``reaped PID CODE`` (CODE as ``os.waitstatus_to_exitcode``, or
``none``). A fork that fails answers ``failed ID MESSAGE``. On end of file the launcher exits;
the supervisors live on in their own sessions.

Launch file: NUL-separated fields: exit file path, working directory, executable path, the job's
user (empty: the shim's own; else ``uid:gid:gid1,gid2``), argc, argv[0..argc-1], then KEY=VALUE
environment entries.
Exit file, one line: ``exit N``, ``signal N``, or ``error MESSAGE`` (the job could not be started).
"""

import _signal  # type: ignore[import-not-found]  # not `signal`: it imports enum (slow)
import os
import sys

_SIGHUP, _SIGINT, _SIGPIPE, _SIGTERM, _SIGXFSZ = 1, 2, 13, 15, 25  # Linux numbers


_GROUP_SIGNALS = (_SIGHUP, _SIGINT, _SIGTERM)
_held: list[int] = []


def _ignore(signum: int, frame: object) -> None:
    """Outlive a SIGTERM to the group; the job itself decides how to react."""


def _hold(signum: int, frame: object) -> None:
    """Before the job exists: keep a signal sent to the group, to pass it on once the job does."""
    _held.append(signum)


def hold_group_signals() -> None:
    for signum in _GROUP_SIGNALS:
        _signal.signal(signum, _hold)


def started(pid: int) -> None:
    """The job ``pid`` is in the group: from now on the group's signals reach it themselves; pass
    on those that came before it existed."""
    for signum in _GROUP_SIGNALS:
        _signal.signal(signum, _ignore)
    for signum in _held:
        try:  # noqa: SIM105 - contextlib is one import too many for the shim's start-up time
            os.kill(pid, signum)
        except OSError:  # the job has already ended
            pass
    _held.clear()


def _write(path: bytes, line: str) -> None:
    tmp = path + b".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _spawn_as(user: bytes, cwd: bytes, executable: bytes, argv: list[bytes], env: dict[bytes, bytes]) -> int:
    """fork, become the job's user, exec; OSError(message) when that fails before the exec."""
    uid, gid, groups = user.split(b":")
    read_end, write_end = os.pipe()  # both close-on-exec (PEP 446)
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then exec or _exit
        try:
            step = "cannot switch to the job's user"
            os.setgroups([int(g) for g in groups.split(b",") if g])
            os.setgid(int(gid))
            os.setuid(int(uid))
            os.umask(0o077)
            step = f"cannot enter working directory {os.fsdecode(cwd)}"
            os.chdir(cwd)
            for signum in (_SIGHUP, _SIGINT, _SIGPIPE, _SIGTERM, _SIGXFSZ):
                _signal.signal(signum, _signal.SIG_DFL)
            step = f"cannot execute {os.fsdecode(argv[0])}"
            os.execve(executable, argv, env)  # noqa: S606 - the job's own argv, as posix_spawn below
        except OSError as exc:
            os.write(write_end, f"{step}: {exc.strerror}".encode("utf-8", "replace"))
        os._exit(127)
    os.close(write_end)
    message = b""
    while chunk := os.read(read_end, 4096):
        message += chunk
    os.close(read_end)
    if message:
        os.waitpid(pid, 0)
        raise OSError(message.decode("utf-8", "replace"))
    return pid


def main(launch_path: str) -> int:
    with open(launch_path, "rb") as f:
        fields = f.read().split(b"\0")
    os.unlink(launch_path)
    exit_path, cwd, executable, user = fields[0], fields[1], fields[2], fields[3]
    argc = int(fields[4])
    argv = fields[5 : 5 + argc]
    env = dict(kv.split(b"=", 1) for kv in fields[5 + argc :] if b"=" in kv)
    try:  # noqa: SIM105 - contextlib is one import too many for the shim's start-up time
        os.set_inheritable(3, False)  # the slot lock, if any, is the shim's alone
    except OSError:
        pass
    hold_group_signals()
    if user:
        try:
            pid = _spawn_as(user, cwd, executable, argv, env)
        except OSError as exc:
            _write(exit_path, f"error {exc}")
            return 127
        started(pid)
        return _wait(pid, exit_path)
    try:
        os.chdir(cwd)
    except OSError as exc:
        _write(exit_path, f"error cannot enter working directory {os.fsdecode(cwd)}: {exc.strerror}")
        return 126
    try:
        pid = os.posix_spawn(
            executable,
            argv,
            env,
            setsigdef=(_SIGHUP, _SIGINT, _SIGPIPE, _SIGTERM, _SIGXFSZ),
            setsigmask=(),
        )
    except OSError as exc:
        _write(exit_path, f"error cannot execute {os.fsdecode(argv[0])}: {exc.strerror}")
        return 127
    started(pid)
    return _wait(pid, exit_path)


def _wait(pid: int, exit_path: bytes) -> int:
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after our no-op signal handlers run
    code = os.waitstatus_to_exitcode(status)
    _write(exit_path, f"exit {code}" if code >= 0 else f"signal {-code}")
    return code if code >= 0 else 128 - code


def serve() -> int:
    """The launcher: fork one supervisor per ``launch`` request until the agent closes the socket."""
    import _socket  # not `socket`: it imports enum and selectors

    sock = _socket.socket(fileno=0)
    fd_space = _socket.CMSG_SPACE(3 * 4)
    while True:
        data, ancdata, _, _ = sock.recvmsg(8192, fd_space, _socket.MSG_CMSG_CLOEXEC)
        if not data:
            return 0
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
        verb, _, rest = data.partition(b" ")
        try:
            if verb == b"launch":
                ident, _, launch_path = rest.partition(b" ")
                if len(fds) in (2, 3):
                    _fork_supervisor(sock, ident, launch_path, fds)
                else:
                    sock.send(b"failed %s the launcher got %d file descriptors, not 2 or 3" % (ident, len(fds)))
            elif verb == b"reap":
                sock.send(b"reaped %s %s" % (rest, _reap(int(rest))))
        finally:
            for fd in fds:
                os.close(fd)


def _reap(pid: int) -> bytes:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return b"none"
    return b"%d" % os.waitstatus_to_exitcode(status) if done else b"none"


def _fork_supervisor(sock: object, ident: bytes, launch_path: bytes, fds: list[int]) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        sock.send(b"failed %s %s" % (ident, str(exc).encode("utf-8", "replace")))  # type: ignore[attr-defined]
        return
    if pid:
        return
    code = 125
    try:  # the child: from here on, the per-job shim
        os.setsid()
        hold_group_signals()  # the agent may signal the group as soon as it reads the answer
        sock.send(b"started %s %d" % (ident, os.getpid()))  # type: ignore[attr-defined]
        sock.detach()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        if len(fds) == 3:
            if fds[2] != 3:
                os.dup2(fds[2], 3)
            os.closerange(4, 1 << 16)
        else:
            os.closerange(3, 1 << 16)
        code = main(os.fsdecode(launch_path))
    except Exception as exc:
        os.write(2, f"gpufleet supervisor: {exc!r}\n".encode("utf-8", "replace"))
    finally:
        os._exit(code)


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1] == "--serve" else main(sys.argv[1]))
