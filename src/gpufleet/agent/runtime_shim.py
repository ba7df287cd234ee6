"""The supervisor shim: leader of every job's process group; records the job's exit status in a file.

ProcessRuntime starts ``python -I -S runtime_shim.py LAUNCH_FILE`` in a new session, with stdin on
/dev/null and stdout/stderr on the job's log files. The shim reads (and deletes, since it may hold
secrets) the launch file, starts the job with posix_spawn, waits for it and writes the exit file.
Because the shim, not the agent, is the job's parent, the exit status survives an agent restart.

It ignores SIGTERM/SIGINT/SIGHUP (with a handler, so the job still gets default dispositions), so a
SIGTERM to the process group stops the job while the shim lives on to record how the job ended. Only
SIGKILL stops the shim, and then the agent knows it sent one.

This file runs by path under ``-I -S`` (no site, no PYTHON* variables, no gpufleet import) so a
job's environment cannot break it and it starts in a few milliseconds: keep it to ``os``, ``sys``
and ``_signal``, without json, subprocess or enum.

Launch file: NUL-separated fields: exit file path, working directory, executable path, argc,
argv[0..argc-1], then KEY=VALUE environment entries.
Exit file, one line: ``exit N``, ``signal N``, or ``error MESSAGE`` (the job could not be started).
"""

import _signal  # type: ignore[import-not-found]  # not `signal`: it imports enum (slow)
import os
import sys

_SIGHUP, _SIGINT, _SIGPIPE, _SIGTERM, _SIGXFSZ = 1, 2, 13, 15, 25  # Linux numbers


def _ignore(signum: int, frame: object) -> None:
    """Outlive a SIGTERM to the group; the job itself decides how to react."""


def _write(path: bytes, line: str) -> None:
    tmp = path + b".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def main(launch_path: str) -> int:
    with open(launch_path, "rb") as f:
        fields = f.read().split(b"\0")
    os.unlink(launch_path)
    exit_path, cwd, executable = fields[0], fields[1], fields[2]
    argc = int(fields[3])
    argv = fields[4 : 4 + argc]
    env = dict(kv.split(b"=", 1) for kv in fields[4 + argc :] if b"=" in kv)
    for signum in (_SIGHUP, _SIGINT, _SIGTERM):
        _signal.signal(signum, _ignore)
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
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after our no-op signal handlers run
    code = os.waitstatus_to_exitcode(status)
    _write(exit_path, f"exit {code}" if code >= 0 else f"signal {-code}")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
