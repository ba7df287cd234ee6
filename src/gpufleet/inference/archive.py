"""A model directory as a deterministic tar.gz, and its safe unpacking on a host.

Deterministic (sorted names, zeroed times and owners) so that pushing the same directory twice
gives the same bytes, hence the same content-addressed version. Unpacking writes every file
itself instead of trusting ``tarfile.extract``: no absolute paths, no ``..``, no links leaving the
destination, no devices, and the unpacked size is capped like the compressed one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from gpufleet.errors import InvalidInput

MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # compressed; also a cap on the unpacked size
MAX_MEMBERS = 20_000
SKIPPED_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _skipped(name: str, is_dir: bool) -> bool:
    return (is_dir and name in SKIPPED_DIRS) or (not is_dir and name.endswith(SKIPPED_SUFFIXES))


def _entries(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of everything under root, sorted, skipping caches and VCS folders."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if _skipped(d, True):
                continue
            p = base / d
            if p.is_symlink():  # a link to a directory travels as a link, never walked into
                found.append((p.relative_to(root).as_posix(), p))
            else:
                keep.append(d)
                found.append((p.relative_to(root).as_posix(), p))
        dirnames[:] = keep
        for f in sorted(filenames):
            if not _skipped(f, False):
                p = base / f
                found.append((p.relative_to(root).as_posix(), p))
    return sorted(found)


def _normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def pack(directory: Path) -> bytes:
    """The directory as a deterministic tar.gz; raises InvalidInput when it is too big or holds
    something that cannot travel (a device, a link leaving the directory)."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidInput(f"{root}: not a directory")
    root = root.resolve()
    entries = _entries(root)
    if len(entries) > MAX_MEMBERS:
        raise InvalidInput(f"{root}: more than {MAX_MEMBERS} files")
    raw = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            st = path.lstat()
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if not _inside(posixpath.dirname(name), target):
                    raise InvalidInput(f"{name}: a link to {target}, outside the model directory")
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tar.addfile(_normal(info))
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(_normal(info))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > MAX_ARCHIVE_BYTES:
                    raise InvalidInput(f"{root}: more than {MAX_ARCHIVE_BYTES // 2**20} MiB of files")
                info.size = st.st_size
                with path.open("rb") as fh:
                    tar.addfile(_normal(info), fh)
            else:
                raise InvalidInput(f"{name}: not a regular file, directory or link")
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise InvalidInput(f"{root}: the archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB")
    return data


def version_digest(owner: str, name: str, archive: bytes) -> str:
    """The content address of a version: the same directory pushed to the same model gives the same id."""
    h = hashlib.sha256(f"{owner}/{name}\0".encode())
    h.update(archive)
    return h.hexdigest()


def _clean_name(name: str) -> str:
    """The member's relative path, or InvalidInput when it could land outside the destination."""
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise InvalidInput(f"archive member {name!r}: an absolute or odd path")
    norm = posixpath.normpath(name)
    if norm in ("", ".") or norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise InvalidInput(f"archive member {name!r}: leaves the model directory")
    return norm


def _inside(parent: str, target: str) -> bool:
    """Whether a link at ``parent/<link>`` pointing to ``target`` stays in the tree."""
    if target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(parent, target))
    return joined not in ("..",) and not joined.startswith("../")


def _members(data: bytes) -> tarfile.TarFile:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise InvalidInput(f"the archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB")
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r|gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"not a tar.gz archive: {exc}") from None


def _checked(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Each member with its cleaned relative path, after the rules both readers share: at most
    ``MAX_MEMBERS`` members and ``MAX_ARCHIVE_BYTES`` of file contents, no path or link that leaves
    the tree, only regular files, directories and symbolic links."""
    total = 0
    for count, m in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise InvalidInput(f"the archive has more than {MAX_MEMBERS} members")
        name = _clean_name(m.name)
        if m.issym():
            if not _inside(posixpath.dirname(name), m.linkname):
                raise InvalidInput(f"archive member {m.name!r}: a link leaving the model directory")
        elif m.isreg():
            total += m.size
            if total > MAX_ARCHIVE_BYTES:
                raise InvalidInput(f"the archive unpacks to more than {MAX_ARCHIVE_BYTES // 2**20} MiB")
        elif not m.isdir():
            raise InvalidInput(f"archive member {m.name!r}: not a regular file, directory or link")
        yield m, name


def unpack(data: bytes, dest: Path) -> None:
    """Write the archive's files under ``dest`` (created if missing), refusing anything unsafe."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with _members(data) as tar:
            for m, name in _checked(tar):
                target = root / name
                parent = target.parent.resolve()
                if parent != root and root not in parent.parents:
                    raise InvalidInput(f"archive member {m.name!r}: leaves the model directory")
                if target.is_symlink():
                    raise InvalidInput(f"archive member {m.name!r}: would write through a link")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if m.issym():
                    os.symlink(m.linkname, target)
                    continue
                src = tar.extractfile(m)
                assert src is not None
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o755 if m.mode & 0o111 else 0o644)
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"a damaged archive: {exc}") from None
    except FileExistsError as exc:
        raise InvalidInput(f"archive member {exc.filename!r}: written twice") from None


def read_files(data: bytes, *, suffixes: tuple[str, ...] = (".py", ".yaml", ".yml")) -> dict[str, bytes]:
    """The regular files whose names end with one of ``suffixes``, by relative path (for
    ``cog_schema.derive``; nothing is written to disk)."""
    files: dict[str, bytes] = {}
    try:
        with _members(data) as tar:
            for m, name in _checked(tar):
                if m.isreg() and name.endswith(suffixes):
                    src = tar.extractfile(m)
                    assert src is not None
                    files[name] = src.read()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"a damaged archive: {exc}") from None
    return files
