"""Which Unix user a job runs as: never one that can read the agent's credential or state.

A job is less trusted than its host (DESIGN.md decision 9). As root the agent runs every job
under its own unprivileged **slot user** ``gpufleet-job-<n>`` (created on first use with
``useradd --system``): one per job running at the same time, so a job can read neither the
agent's files (state dir 0700, root's) nor another job's (work dirs 0700 of another uid, and
``/proc/<pid>/environ``/``cwd`` of another uid are closed to it). A slot is held by an ``flock``
on ``/run/gpufleet/job-slots/<n>`` that the job's shim keeps open for the job's life, so agents
sharing a machine (and an agent restarted while its jobs run) never hand one uid to two jobs;
whatever a previous job of the slot left running is killed before the slot is used again.

``--job-user NAME`` runs every job as that one existing user instead (jobs can then see each
other's processes); ``--job-user agent`` runs them as the agent's own user, which is all a
non-root agent can do: the agent then warns at start that jobs can read its files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gpufleet.agent.processes.runtime")

SLOT_PREFIX = "gpufleet-job-"
SLOT_LOCK_DIR = Path("/run/gpufleet/job-slots")  # tmpfs: emptied by a reboot, as the jobs are
MAX_SLOTS = 1024
SAME_USER_WARNING = (
    "jobs run as this agent's own user (uid {uid}) and can read its credential and state in {state_dir} "
    "(and all else this user can: under a non-root `gpufleet up`, its embedded database); "
    "{fix} so each job runs as an unprivileged gpufleet-job-N user (docs/agent.md, 'Job users')"
)


class JobUserError(Exception):
    """The job users cannot be set up; one line for the operator."""


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Who one job runs as. ``lock_fd`` (slot users only) holds the slot until the job's shim has it."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    lock_fd: int | None = None


class JobUsers:
    """The agent's own user: no isolation (a non-root agent, or ``--job-user agent``)."""

    separate = False
    exclusive = False  # the uid belongs to one job only (it may be swept of leftovers)

    def claim(self) -> JobIdentity | None:
        return None


class NamedUser(JobUsers):
    """Every job as one existing user."""

    separate = True

    def __init__(self, name: str) -> None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise JobUserError(f"--job-user {name}: no such user") from None
        if entry.pw_uid == 0:
            raise JobUserError(f"--job-user {name}: jobs must not run as root")
        groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != 0)
        self._identity = JobIdentity(entry.pw_uid, entry.pw_gid, groups, name)

    def claim(self) -> JobIdentity:
        return self._identity


class SlotUsers(JobUsers):
    """One ``gpufleet-job-<n>`` user per running job, shared machine-wide through slot locks."""

    separate = True
    exclusive = True

    def __init__(self, lock_dir: Path = SLOT_LOCK_DIR, *, prefix: str = SLOT_PREFIX) -> None:
        self.lock_dir, self.prefix = lock_dir, prefix
        if _useradd() is None:
            try:
                pwd.getpwnam(f"{prefix}0")
            except KeyError:
                raise JobUserError(
                    f"useradd is not installed, so the job users {prefix}N cannot be created: "
                    "install it (package passwd/shadow-utils), create them, or pass --job-user"
                ) from None
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(lock_dir, 0o700)

    def claim(self) -> JobIdentity:
        for n in range(MAX_SLOTS):
            fd = os.open(self.lock_dir / str(n), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                entry = _ensure_user(f"{self.prefix}{n}")
                sweep_uid(entry.pw_uid)  # a free slot: anything of its uid is a previous job's leftover
                sweep_files(entry.pw_uid)
            except BaseException:
                os.close(fd)
                raise
            return JobIdentity(entry.pw_uid, entry.pw_gid, (entry.pw_gid,), entry.pw_name, fd)
        raise JobUserError(f"all {MAX_SLOTS} job slots are in use")


def job_users(policy: str, *, state_dir: Path) -> JobUsers:
    """``auto`` (slot users as root, else the agent's user), ``agent``, or a user name."""
    root = os.geteuid() == 0
    if policy == "auto":
        users: JobUsers = SlotUsers() if root else JobUsers()
    elif policy == "agent":
        users = JobUsers()
    else:
        if not root:
            raise JobUserError(f"--job-user {policy}: running jobs as another user needs an agent running as root")
        users = NamedUser(policy)
    if not users.separate:
        fix = "drop --job-user agent" if root else "run the agent as root"
        log.warning(SAME_USER_WARNING.format(uid=os.geteuid(), state_dir=state_dir, fix=fix))
    return users


# Owns nothing and is in no group: what any job user can reach, judged by the "other" permission bits.
_ANY_JOB_USER = JobIdentity(2**31 - 2, 2**31 - 2, (), "a job user")


def hidden_from_jobs(users: JobUsers, search_path: str | None = None, python: str | None = None) -> str | None:
    """One line when the PATH or the Python this agent was started with are closed to its job users
    (e.g. a pyenv or venv under root's 0700 home): what jobs get instead, and what to do."""
    identity = users.claim() if isinstance(users, NamedUser) else _ANY_JOB_USER
    search_path = os.environ.get("PATH", os.defpath) if search_path is None else search_path
    python = python or sys.executable
    dirs = list(dict.fromkeys(d for d in search_path.split(os.pathsep) if os.path.isabs(d)))
    closed = [d for d in dirs if os.path.isdir(d) and not may_access(d, identity, os.X_OK)]
    python_closed = not may_access(python, identity, os.X_OK)
    if not closed and not python_closed:
        return None
    kept = searchable_path(search_path, identity)
    found = {n: shutil.which(n, path=kept) for n in ("python3", "python")}
    pythons = " and ".join(f"{n} is {p}" if p else f"{n} is not found" for n, p in found.items())
    what = []
    if closed:
        what.append(f"the directories {', '.join(closed)} of this agent's PATH")
    if python_closed:
        real = os.path.realpath(python)
        what.append(f"its Python ({python}{'' if real == python else ' -> ' + real})")
    return (
        f"job users cannot reach {' nor '.join(what)}: jobs run with PATH={kept}, where {pythons}; to give jobs "
        "this PATH and Python, install them outside a 0700 home (e.g. a venv in /opt), or pass --job-user "
        "(docs/agent.md, 'Job users')"
    )


def _useradd() -> str | None:
    return shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
    )


def _ensure_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = _useradd() or "useradd"
    argv = [
        useradd,
        "--system",
        "--no-create-home",
        "--user-group",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "gpufleet job slot",
        name,
    ]
    deadline = time.monotonic() + 10.0
    while True:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except OSError as exc:
            raise JobUserError(f"cannot create the job user {name} ({exc}); create it or pass --job-user") from None
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)  # created, or by a concurrent agent (useradd exit 9)
        # 10: /etc/passwd is locked by another useradd (other agents starting their own slots).
        if done.returncode != 10 or time.monotonic() > deadline:
            raise JobUserError(f"cannot create the job user {name}: {done.stderr.strip() or done.returncode}")
        time.sleep(0.05)


def sweep_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (only for a uid that belongs to no running job).

    ``/proc/<pid>`` belongs to the process's effective uid: one stat per process, about 10x
    cheaper than psutil, and it runs twice per job on the agent's event loop.
    """
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)


# Where any user may write: what a job leaves there would be readable by the next job of its slot
# user (another member's job), so it goes with the job. Sticky world-writable folders below them
# (e.g. /tmp/.X11-unix, a tool's shared cache) are searched too, a few levels deep.
SHARED_TEMP_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))  # noqa: S108
_SHARED_DEPTH = 3


def sweep_files(uid: int, roots: tuple[Path, ...] = SHARED_TEMP_DIRS) -> int:
    """Remove what ``uid`` owns in the shared temporary folders; the number of entries removed."""
    removed = 0

    def visit(folder: Path, depth: int) -> None:
        nonlocal removed
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_uid == uid:
                        if stat.S_ISDIR(st.st_mode):
                            shutil.rmtree(entry.path, ignore_errors=True)
                        else:
                            os.unlink(entry.path)
                        removed += 1
                    elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o1002 == 0o1002 and depth < _SHARED_DEPTH:
                        visit(Path(entry.path), depth + 1)

    for root in roots:
        visit(root, 1)
    return removed


def release_slot(uid: int | None, lock_fd: int | None) -> None:
    """A job slot's job is over: kill what is left of its ``uid`` (if exclusive to it) and remove its
    files from the shared temporary folders, then free the slot."""
    if uid is not None:
        sweep_uid(uid)
        sweep_files(uid)
    if lock_fd is not None:
        os.close(lock_fd)


def may_access(path: str, user: JobIdentity | None, mode: int) -> bool:
    """``os.access`` for the job's user: every parent searchable, the path itself ``mode``.

    Root's own ``os.access`` says yes to nearly everything, so it cannot tell whether the job's
    user will be able to run a program (e.g. a Python under root's 0700 home)."""
    if user is None:
        return os.access(path, mode)
    path = os.path.realpath(path)  # a symlink's target's parents are what the kernel walks
    try:
        checks = [(p, os.X_OK) for p in reversed(Path(path).parents)] + [(Path(path), mode)]
        for p, want in checks:
            st = os.stat(p)
            if st.st_uid == user.uid:
                bits = st.st_mode >> 6
            elif st.st_gid == user.gid or st.st_gid in user.groups:
                bits = st.st_mode >> 3
            else:
                bits = st.st_mode
            if (bits & want) != want:
                return False
    except OSError:
        return False
    return True


def searchable_path(search_path: str, user: JobIdentity) -> str:
    """``search_path`` without the directories ``user`` cannot search (relative entries stay:
    they name the job's own working directory)."""
    kept = [d for d in search_path.split(os.pathsep) if not os.path.isabs(d) or may_access(d, user, os.X_OK)]
    return os.pathsep.join(kept) if any(kept) else os.defpath


def default_work_root(state_dir: Path) -> Path:
    """Where jobs' working directories go: never inside the state dir.

    As root a fixed system place (every parent traversable by the job users), one subfolder per
    state dir so agents sharing a machine keep apart; otherwise a sibling of the state dir.
    """
    state_dir = Path(state_dir).absolute()
    if os.geteuid() == 0:
        key = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
        return Path("/var/lib/gpufleet/work") / key
    return state_dir.with_name(f"{state_dir.name}-work")


def prepare_work_root(root: Path, *, state_dir: Path, users: JobUsers) -> None:
    """Create the work root: its own user's, 0711 (job users enter their own dir, list nothing)."""
    root = Path(root).absolute()
    state = Path(state_dir).absolute()
    if root == state or state in root.parents:
        raise JobUserError(f"the jobs' work directory {root} must not be inside the state directory {state}")
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(root, 0o711)  # noqa: S103 - search only: a job user enters its own dir, lists nothing
    if not users.separate:
        return
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise JobUserError(
                f"job users cannot reach {root}: {parent} is not searchable by others "
                "(chmod o+x it, or pass --work-dir)"
            )


def make_workdir(path: Path, user: JobIdentity | None) -> None:
    """A fresh directory only the job's user can enter (a leftover of an earlier try is replaced)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    if user is not None:
        os.chown(path, user.uid, user.gid)
