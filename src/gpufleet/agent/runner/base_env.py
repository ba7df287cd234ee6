"""The Python a model's worker runs with when jobs run as other users who cannot use the agent's.

A pyenv or a venv under root's 0700 home is a common setup: job users can neither execute the
agent's interpreter nor read its site-packages. Then (runner/envs.py, ``EnvCache``):

* the worker runs with a CPython of the agent's major.minor that job users can run: the agent's own
  when they can, else the one its venv points at, ``/usr/bin/python3.X``, ``/usr/local/bin/python3.X``,
  then ``python3.X`` and ``python3`` on the PATH jobs get. Each is tried by running it as a uid that
  owns nothing and is in no group (what any job user may do), not judged from permission bits alone;
* ``cog`` and what it needs come from a copy of those distributions, taken offline from the agent's
  own environment (their installed files, as their RECORD lists them) into
  ``ENV_ROOT/base-site/<key>/`` once: world-readable, writable by the agent alone.

Everything here is synchronous (the agent calls it in a thread) and raises nothing of its own but
``VendorError``; envs.py turns failures into the replica's error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from gpufleet.agent.processes.users import JobIdentity, searchable_path

PROBE_UID = 2**31 - 2  # owns nothing and is in no group: "other" permissions, as any job user has
PROBE_TIMEOUT_S = 60.0
VERSION_PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:2])"
_PROBE_USER = JobIdentity(PROBE_UID, PROBE_UID, (), "a job user")
SYSTEM_BIN_DIRS = ("/usr/bin", "/usr/local/bin")  # where distributions put python3.X, before the PATH


class VendorError(Exception):
    """The agent's environment cannot be copied for job users; one line for the replica's error."""


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    out: str
    err: str


def as_job_user(python: str, code: str, *, env: dict[str, str] | None = None) -> Probe:
    """Run ``python -c code`` as a user that owns nothing (as this user when not root)."""
    root = os.geteuid() == 0
    try:
        done = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
            cwd="/",
            env={"PATH": os.defpath, "LANG": "C.UTF-8", **(env or {})},
            user=PROBE_UID if root else None,
            group=PROBE_UID if root else None,
            extra_groups=[] if root else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, "", str(exc))
    return Probe(done.returncode == 0, done.stdout.strip(), done.stderr.strip())


def candidates(python: str, search_path: str) -> list[str]:
    """The interpreters to try, best first (see the module's docstring)."""
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    kept = searchable_path(search_path, _PROBE_USER)
    found = [
        python,
        os.path.realpath(python),
        *(os.path.join(d, name) for d in SYSTEM_BIN_DIRS),
        shutil.which(name, path=kept),
        shutil.which("python3", path=kept),
    ]
    return list(dict.fromkeys(p for p in found if p))


def choose_python(python: str, search_path: str) -> str | None:
    """The first candidate a job user can run that is a CPython of this agent's major.minor."""
    want = f"cpython {sys.version_info[0]} {sys.version_info[1]}"
    for candidate in candidates(python, search_path):
        if os.path.isfile(candidate) and as_job_user(candidate, VERSION_PROBE).out == want:
            return candidate
    return None


def closure(root: str = "cog") -> list[metadata.Distribution]:
    """``root``'s distribution and every one it requires, recursively, as installed here: markers
    evaluated for this interpreter, extras left out."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise VendorError(f"{name} (needed by {root}) is not installed in the agent's environment") from None
        seen[name] = dist
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def base_key(python: str, dists: list[metadata.Distribution]) -> str:
    """Names the copy: the agent's interpreter and the exact distributions copied, and the
    interpreter the copy is for (a new cog, or a new agent Python, makes a new copy)."""
    ident = {
        "agent": [os.path.realpath(sys.executable), sys.version],
        "python": os.path.realpath(python),
        "dists": [[d.metadata["Name"], d.version, str(d.locate_file(""))] for d in dists],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def copy_distributions(dists: list[metadata.Distribution], dest: Path) -> tuple[int, int]:
    """Copy each distribution's installed files (its RECORD) under ``dest``, laid out as in its
    site-packages; files outside it (scripts in bin/) are left out. The number of files and bytes."""
    files = size = 0
    for dist in dists:
        listed = dist.files
        if listed is None:
            raise VendorError(f"{dist.metadata['Name']} lists no installed files (no RECORD): it cannot be copied")
        for rel in listed:
            if rel.is_absolute() or ".." in rel.parts:
                continue
            src = Path(str(dist.locate_file(rel)))
            if not src.is_file():  # e.g. a .pyc listed but never written
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)  # keeps mtimes, so the copied .pyc files stay valid
            files += 1
            size += target.stat().st_size
    return files, size
