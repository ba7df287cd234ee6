"""Model environments on a host: a version's files and the Python its worker runs with, built once.

``EnvCache.materialize(replica)`` makes a version runnable here and says how long that took and
whether it was all cached already::

    STATE_DIR/models/<digest>.tar.gz        the archive as downloaded (digest verified), 0600
    ENV_ROOT/versions/<digest>/             the unpacked model, read-only for job users
    ENV_ROOT/venvs/<key>/                   a venv per python_packages list (key: packages + Python)
    ENV_ROOT/base-site/<key>/, base/<key>/  cog copied for job users who cannot read the agent's (base_env.py)
    ENV_ROOT/runner-<hash>/worker*.py       the worker, where every job user can read it
    ENV_ROOT/pip-cache/                     pip's cache, the agent's alone (0700)
    ENV_ROOT/locks/                         flock per build: one build per key on the machine

A model with no ``python_packages`` runs with the agent's own interpreter, which has ``cog`` (a
dependency of gpufleet): nothing is built, so a first start costs only the download and unpacking.
Otherwise its venv is made with ``--system-site-packages`` over the agent's base interpreter plus a
``.pth`` naming the agent's site-packages (so ``cog`` comes from the agent even when the agent itself
runs in a venv), and pip installs the packages into it: wheels only unless the operator allows
source builds (a source build runs the package's code as the agent's user), with a shared cache and
the operator's index options, so it works air-gapped (docs/agent.md, "Model environments").

When jobs run as other users who cannot run the agent's interpreter or import its ``cog`` (a pyenv
or venv under root's 0700 home), the worker runs instead with a CPython of the same major.minor that
they can run, over a copy of ``cog`` and its dependencies taken from the agent's environment
(runner/base_env.py); venvs are then built over that interpreter and that copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import site
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import Distribution
from pathlib import Path
from uuid import UUID

from gpufleet.agent.runner import base_env
from gpufleet.errors import InvalidInput
from gpufleet.inference.archive import unpack, version_digest
from gpufleet.schemas.runner import ReplicaAssignmentOut

log = logging.getLogger("gpufleet.agent.runner")

WORKER_FILES = ("worker.py", "worker_io.py")
PIP_TAIL_LINES = 25
# A requirement specifier only (name, extras, versions, markers): no options ("--index-url ..."),
# no direct references to URLs or paths, which would make the host fetch what a tenant names.
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._, -]*\])?\s*([<>=!~,.*+ A-Za-z0-9_-]*)(;[^@]*)?$")

Fetch = Callable[[UUID], Awaitable[tuple[bytes, str | None]]]


class EnvironmentFailed(Exception):
    """The version cannot be made runnable here; the message is for the model's owner."""


@dataclass(frozen=True, slots=True)
class PipOptions:
    """The operator's pip settings for model environments (``gpufleet agent --pip-...``); pip's own
    configuration (pip.conf, PIP_* variables of the agent) applies as well."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    allow_source: bool = False  # sdists run their build code as the agent's user: off by default
    timeout_s: float = 1800.0

    def args(self) -> list[str]:
        out = [] if self.allow_source else ["--only-binary", ":all:"]
        if self.no_index:
            out.append("--no-index")
        if self.index_url:
            out += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            out += ["--extra-index-url", url]
        for place in self.find_links:
            out += ["--find-links", place]
        return out


@dataclass(frozen=True, slots=True)
class Interpreter:
    """What workers run with: ``python`` for a model without packages, ``base`` to build venvs
    from, and ``sites`` (where ``cog`` is) for a venv's ``.pth``."""

    python: str
    base: str
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Environment:
    python: str  # the interpreter the worker runs with
    src: Path  # the unpacked version (read-only: the worker copies it into its working directory)
    worker: Path  # worker.py, readable by job users
    environment_s: float
    cached: bool  # nothing had to be downloaded, unpacked or installed


def default_env_root(state_dir: Path) -> Path:
    """Beside the jobs' work root: never inside the (0700) state dir, since job users read it."""
    state_dir = Path(state_dir).absolute()
    if os.geteuid() == 0:
        key = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
        return Path("/var/lib/gpufleet/envs") / key
    return state_dir.with_name(f"{state_dir.name}-envs")


def check_packages(packages: list[str]) -> None:
    for p in packages:
        if not _REQUIREMENT.match(p.strip()):
            raise EnvironmentFailed(
                f"python_packages: {p!r} is not a requirement specifier (name[extras] version; markers): "
                "options, URLs and paths are not accepted"
            )


@dataclass
class EnvCache:
    state_dir: Path
    fetch: Fetch  # version id -> (archive, the digest the server states)
    root: Path | None = None
    pip: PipOptions = field(default_factory=PipOptions)
    python: str = sys.executable
    other_users: bool = False  # jobs run as other users (processes/users.py): they must reach the root
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _interpreter: Interpreter | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root or default_env_root(self.state_dir)).absolute()
        self.archives = Path(self.state_dir) / "models"

    # -- the one public operation ----------------------------------------------------------------

    async def materialize(self, replica: ReplicaAssignmentOut) -> Environment:
        """Make the version runnable here (download, unpack, venv): once per version and package
        list on the machine, however many replicas ask at once. Raises ``EnvironmentFailed``."""
        started = time.monotonic()
        assert self.root is not None
        packages = [p.strip() for p in replica.python_packages if p.strip()]
        check_packages(packages)
        self._prepare_root()
        worker = self._install_worker()
        interpreter, built_base = await self.interpreter()
        built_src = await self._locked(f"version-{replica.digest}", self._version, replica)
        built_env = False
        python = interpreter.python
        if packages:
            if replica.python_version and not self._same_python(replica.python_version):
                log.warning(
                    "model %s asks for Python %s; its environment uses this agent's Python %d.%d",
                    replica.model,
                    replica.python_version,
                    *sys.version_info[:2],
                )
            key = self.venv_key(packages, interpreter)
            built_env = await self._locked(f"venv-{key}", self._venv, key, packages, interpreter)
            python = str(self.root / "venvs" / key / "bin" / "python")
        return Environment(
            python=python,
            src=self.root / "versions" / replica.digest,
            worker=worker,
            environment_s=time.monotonic() - started,
            cached=not (built_src or built_env or built_base),
        )

    def venv_key(self, packages: list[str], interpreter: Interpreter | None = None) -> str:
        ident: dict[str, object] = {"packages": packages, "python": os.path.realpath(self.python)}
        ident["version"] = sys.version
        if interpreter is not None and interpreter.python != self.python:  # the copied base: its own key
            ident["base"] = [interpreter.base, *interpreter.sites]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    # -- the interpreter -------------------------------------------------------------------------

    async def interpreter(self) -> tuple[Interpreter, bool]:
        """What workers run with (found once per agent), and whether this call built anything."""
        async with self._locks.setdefault("interpreter", asyncio.Lock()):
            if self._interpreter is not None:
                return self._interpreter, False
            own = Interpreter(self.python, self.python, tuple(agent_site_dirs()))
            if not self.other_users or (await asyncio.to_thread(base_env.as_job_user, self.python, "import cog")).ok:
                self._interpreter = own  # job users can use the agent's own: nothing to copy
                return own, False
            interpreter, built = await self._copied_base()
            self._interpreter = interpreter
            return interpreter, built

    async def _copied_base(self) -> tuple[Interpreter, bool]:
        assert self.root is not None
        search_path = os.environ.get("PATH", os.defpath)
        python = await asyncio.to_thread(base_env.choose_python, self.python, search_path)
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if python is None:
            tried = ", ".join(base_env.candidates(self.python, search_path))
            raise EnvironmentFailed(
                f"job users cannot run this agent's Python ({self.python}) nor any other Python {version} "
                f"(tried {tried}): install python{version} (e.g. apt install python{version}), or install "
                "the agent in a venv job users can reach (e.g. in /opt) (docs/agent.md, 'Model environments')"
            )
        try:
            dists = await asyncio.to_thread(base_env.closure, "cog")
        except base_env.VendorError as exc:
            raise EnvironmentFailed(str(exc)) from None
        key = base_env.base_key(python, dists)
        built = await self._locked(f"base-{key}", self._base, key, python, dists)
        venv_python = str(self.root / "base" / key / "bin" / "python")
        probe = await asyncio.to_thread(base_env.as_job_user, venv_python, "import cog")
        if not probe.ok:
            tail = probe.err.splitlines()[-1] if probe.err else "no output"
            raise EnvironmentFailed(
                f"cog, copied for job users to {self.root / 'base-site' / key}, does not import: {tail}"
            )
        return Interpreter(venv_python, python, (str(self.root / "base-site" / key),)), built

    async def _base(self, key: str, python: str, dists: list[Distribution]) -> bool:
        """Copy cog's distributions to base-site/<key> and make base/<key>, a venv over ``python``
        that sees them; False when both were there already."""
        assert self.root is not None
        site, venv = self.root / "base-site" / key, self.root / "base" / key
        if site.is_dir() and (venv / "gpufleet-ready.json").is_file():
            return False
        started = time.monotonic()
        if not site.is_dir():
            tmp = site.with_name(f".{key}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                files, size = await asyncio.to_thread(base_env.copy_distributions, dists, tmp)
            except (base_env.VendorError, OSError) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise EnvironmentFailed(f"cannot copy cog for job users: {exc}") from None
            await asyncio.to_thread(_readable, tmp)
            os.replace(tmp, site)
            log.info(
                "job users cannot use this agent's Python: copied cog and %d other distributions (%d files, "
                "%.1f MB) to %s in %.2f s; workers run with %s",
                len(dists) - 1,
                files,
                size / 1e6,
                site,
                time.monotonic() - started,
                python,
            )
        await self._make_venv(venv, python, (str(site),), {"python": python, "site": str(site)})
        return True

    async def _make_venv(self, venv: Path, python: str, sites: tuple[str, ...], ready: dict[str, object]) -> None:
        """A venv over ``python`` (its system's packages visible) whose ``.pth`` names ``sites``."""
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half-way
        await self._run([python, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], "venv")
        purelib = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        (purelib / "_gpufleet_agent.pth").write_text("".join(f"{p}\n" for p in sites), encoding="utf-8")
        await asyncio.to_thread(_readable, venv)
        if ready:
            marker = venv / "gpufleet-ready.json"
            marker.write_text(json.dumps(ready), encoding="utf-8")
            os.chmod(marker, 0o644)

    # -- locking ---------------------------------------------------------------------------------

    async def _locked(self, key: str, build: Callable[..., Awaitable[bool]], *args: object) -> bool:
        """Run ``build`` under this process's lock and the machine-wide flock for ``key``."""
        assert self.root is not None
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            path = self.root / "locks" / f"{key}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                return await build(*args)
            finally:
                os.close(fd)  # releases the flock

    # -- the version's files ---------------------------------------------------------------------

    async def _version(self, replica: ReplicaAssignmentOut) -> bool:
        """Unpack the version (downloading its archive if needed); False when it already was."""
        assert self.root is not None
        dest = self.root / "versions" / replica.digest
        if dest.is_dir():
            return False
        archive = self.archives / f"{replica.digest}.tar.gz"
        data = await asyncio.to_thread(_read_if_there, archive)
        if data is None or not self._digest_ok(replica, data):
            data, stated = await self.fetch(replica.version_id)
            if stated is not None and stated != replica.digest:
                raise EnvironmentFailed(f"the server sent version {stated}, not {replica.digest}")
            if not self._digest_ok(replica, data):
                raise EnvironmentFailed(f"the archive of version {replica.digest} does not match its digest")
            await asyncio.to_thread(_write_private, archive, data)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            await asyncio.to_thread(self._unpack, data, tmp, dest)
        except InvalidInput as exc:
            raise EnvironmentFailed(f"cannot unpack version {replica.digest}: {exc.message}") from None
        return True

    def _digest_ok(self, replica: ReplicaAssignmentOut, data: bytes) -> bool:
        owner, _, name = replica.model.partition("/")
        return version_digest(owner, name, data) == replica.digest

    @staticmethod
    def _unpack(data: bytes, tmp: Path, dest: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        unpack(data, tmp)
        _readable(tmp)
        os.replace(tmp, dest)

    # -- the Python environment ------------------------------------------------------------------

    async def _venv(self, key: str, packages: list[str], interpreter: Interpreter) -> bool:
        """Build the venv for ``packages``; False when it was there already."""
        assert self.root is not None
        venv = self.root / "venvs" / key
        ready = venv / "gpufleet-ready.json"
        if ready.is_file():
            return False
        await self._make_venv(venv, interpreter.base, interpreter.sites, {})
        cache = self.root / "pip-cache"
        command = [self.python, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        command += ["--disable-pip-version-check", "--no-input", "--cache-dir", str(cache), *self.pip.args()]
        try:
            await self._run([*command, "--", *packages], "pip install")
        except EnvironmentFailed:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        await asyncio.to_thread(_readable, venv)
        ready.write_text(json.dumps({"packages": packages, "python": self.python}), encoding="utf-8")
        os.chmod(ready, 0o644)
        return True

    async def _run(self, argv: list[str], what: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.pip.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise EnvironmentFailed(f"{what} took over {self.pip.timeout_s:g} s and was stopped") from None
        if proc.returncode != 0:
            lines = out.decode("utf-8", "replace").rstrip().splitlines()[-PIP_TAIL_LINES:]
            raise EnvironmentFailed(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(lines))

    def _same_python(self, wanted: str) -> bool:
        return tuple(wanted.split(".")[:2]) == tuple(str(n) for n in sys.version_info[:2])

    # -- the root and the worker's files ---------------------------------------------------------

    def _prepare_root(self) -> None:
        assert self.root is not None
        for sub, mode in (
            ("", 0o755),
            ("versions", 0o755),
            ("venvs", 0o755),
            ("base-site", 0o755),
            ("base", 0o755),
            ("locks", 0o700),
            ("pip-cache", 0o700),
        ):
            path = self.root / sub if sub else self.root
            path.mkdir(parents=True, exist_ok=True, mode=mode)
            if stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)
        self.archives.mkdir(parents=True, exist_ok=True, mode=0o700)
        closed = [str(p) for p in self.root.parents if not p.stat().st_mode & stat.S_IXOTH]
        if closed and self.other_users:
            raise EnvironmentFailed(
                f"job users cannot reach the model environments in {self.root}: {closed[0]} is not searchable "
                "by others (chmod o+x it, or pass --env-dir)"
            )

    def _install_worker(self) -> Path:
        assert self.root is not None
        here = Path(__file__).parent
        sources = {n: (here / n).read_bytes() for n in WORKER_FILES}
        digest = hashlib.sha256(b"".join(sources[n] for n in WORKER_FILES)).hexdigest()[:16]
        folder = self.root / f"runner-{digest}"
        if not (folder / WORKER_FILES[0]).is_file():
            tmp = self.root / f".runner-{digest}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755)
            for name, data in sources.items():
                (tmp / name).write_bytes(data)
                os.chmod(tmp / name, 0o644)
            with contextlib.suppress(OSError):  # another agent put the same files there first
                os.replace(tmp, folder)
            shutil.rmtree(tmp, ignore_errors=True)
        return folder / WORKER_FILES[0]


def agent_site_dirs() -> list[str]:
    """Where this agent's packages (cog among them) are installed, for a model venv's .pth."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _read_if_there(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _readable(root: Path) -> None:
    """Everything under ``root`` readable (and folders searchable) by every user, writable by none
    but the owner: job users run from it and must not change what the next replica runs."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            want = (mode | 0o444 | (0o111 if stat.S_ISDIR(st.st_mode) or mode & 0o100 else 0)) & ~0o022
            if want != mode:
                os.chmod(path, want)
    os.chmod(root, 0o755)  # noqa: S103 - job users run what is in it; none may write
