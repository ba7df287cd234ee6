"""When job users cannot use the agent's Python (runner/base_env.py): the interpreter workers run with
instead, and cog's distributions copied for them from the agent's environment, once, readable by all.

Run as root (as here), the probes run as a uid that owns nothing; the agent's "Python" is a script
that is no Python at all, so what is chosen does not depend on who runs the tests."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpufleet.agent.runner import base_env
from gpufleet.agent.runner.envs import EnvCache, EnvironmentFailed
from tests.agent.test_runner_envs import Server

VERSION = f"cpython {sys.version_info[0]} {sys.version_info[1]}"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    # Not tmp_path (its parent is 0700 as root): job users must be able to reach what is made here.
    path = Path(tempfile.mkdtemp(prefix="gpufleet-base-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _dist(site: Path, name: str, requires: list[str], files: dict[str, str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    for rel, text in files.items():
        if not rel.startswith(".."):
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(text)
    record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))


def test_the_closure_follows_requirements_with_markers_and_without_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _dist(
        site,
        "gf_top",
        [
            "gf-mid>=1",
            "GF.Leaf; python_version >= '3'",
            "gf-never; sys_platform == 'no-such-platform'",
            "gf-extra; extra == 'tracing'",
        ],
        {"gf_top/__init__.py": "TOP = 1\n", "../../bin/gf-top": "#!script\n"},
    )
    _dist(site, "gf_mid", ["gf_leaf"], {"gf_mid.py": "MID = 1\n"})
    _dist(site, "gf_leaf", [], {"gf_leaf/__init__.py": "", "gf_leaf/data.txt": "leaf"})
    _dist(site, "gf_extra", [], {"gf_extra.py": ""})
    monkeypatch.syspath_prepend(str(site))
    dists = base_env.closure("gf-top")
    assert [d.metadata["Name"] for d in dists] == ["gf_leaf", "gf_mid", "gf_top"]  # each once, extras left out
    with pytest.raises(base_env.VendorError, match="gf-never-installed"):
        _dist(site, "gf_broken", ["gf-never-installed"], {})
        base_env.closure("gf_broken")

    dest = tmp_path / "copy"
    files, size = base_env.copy_distributions(dists, dest)
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == [
        "gf_leaf-1.0.dist-info/METADATA",
        "gf_leaf-1.0.dist-info/RECORD",
        "gf_leaf/__init__.py",
        "gf_leaf/data.txt",
        "gf_mid-1.0.dist-info/METADATA",
        "gf_mid-1.0.dist-info/RECORD",
        "gf_mid.py",
        "gf_top-1.0.dist-info/METADATA",
        "gf_top-1.0.dist-info/RECORD",
        "gf_top/__init__.py",
    ]  # the script listed outside site-packages is not
    assert files == len(copied) and size == sum((dest / c).stat().st_size for c in copied)


def test_the_closure_of_cog_is_what_the_agent_has_installed() -> None:
    dists = base_env.closure("cog")
    names = {d.metadata["Name"].lower().replace("_", "-") for d in dists}
    assert "cog" in names
    for dist in dists:  # closed under requirements (extras aside)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in {canonicalize_name(n) for n in names}
    assert not any(n.startswith("opentelemetry") for n in names)  # cog's "tracing" extra
    assert len(dists) == len(names)


def test_a_python_job_users_can_run_of_the_same_version_is_chosen(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's "Python" answers as another version: the system's python3.X is chosen.
    wrong = _script(open_dir / "agent" / "python", "echo cpython 3 2")
    real = base_env.choose_python(str(wrong), "/usr/bin:/bin")
    assert real is not None and not real.startswith(str(open_dir))
    assert base_env.as_job_user(real, base_env.VERSION_PROBE).out == VERSION
    # On the PATH: a python3.X of another version first (skipped), then a python3 of this one.
    monkeypatch.setattr(base_env, "SYSTEM_BIN_DIRS", ())
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    _script(open_dir / "bin" / name, "echo cpython 3 2")
    (open_dir / "good").mkdir()
    (open_dir / "good" / "python3").symlink_to(real)
    search_path = f"{open_dir / 'bin'}:{open_dir / 'good'}"
    assert base_env.candidates(str(wrong), search_path) == [
        str(wrong),
        str(open_dir / "bin" / name),
        str(open_dir / "good" / "python3"),
    ]
    assert base_env.choose_python(str(wrong), search_path) == str(open_dir / "good" / "python3")
    # A directory job users cannot search is not looked in.
    (open_dir / "good").chmod(0o700)
    expected = None if os.geteuid() == 0 else str(open_dir / "good" / "python3")
    assert base_env.choose_python(str(wrong), search_path) == expected


async def test_no_python_job_users_can_run_fails_the_replica_with_what_to_install(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = Server()
    broken = _script(open_dir / "agent" / "python", "exit 1")
    monkeypatch.setattr(base_env, "SYSTEM_BIN_DIRS", ())
    monkeypatch.setenv("PATH", str(open_dir / "agent"))
    cache = EnvCache(
        open_dir / "state", fetch=server.fetch, root=open_dir / "envs", python=str(broken), other_users=True
    )
    with pytest.raises(EnvironmentFailed) as failed:
        await cache.materialize(server.version(tmp_path, []))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    message = str(failed.value)
    assert f"job users cannot run this agent's Python ({broken}) nor any other Python {version}" in message
    assert f"install python{version}" in message and "\n" not in message
    assert server.downloads == 0


def _readable_by_all(root: Path) -> bool:
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not mode & stat.S_IROTH or mode & 0o022 or (stat.S_ISDIR(st.st_mode) and not mode & stat.S_IXOTH):
            return False
    return True


async def test_cog_is_copied_once_readable_by_job_users_and_imports_for_them(open_dir: Path, tmp_path: Path) -> None:
    server = Server()
    agent = _script(open_dir / "agent" / "python", "exit 1")  # job users cannot use the agent's Python
    cache = EnvCache(
        open_dir / "state", fetch=server.fetch, root=open_dir / "envs", python=str(agent), other_users=True
    )
    replica = server.version(tmp_path, [])
    env = await cache.materialize(replica)
    assert not env.cached and env.python.startswith(str(open_dir / "envs" / "base"))
    (site,) = (open_dir / "envs" / "base-site").iterdir()
    assert (site / "cog" / "__init__.py").is_file() and _readable_by_all(site)
    assert _readable_by_all(Path(env.python).parent.parent)
    cog = metadata.distribution("cog")
    assert (site / f"cog-{cog.version}.dist-info" / "METADATA").is_file()
    # As a job user: the worker's interpreter imports cog, from the copy.
    probe = base_env.as_job_user(env.python, "import cog, sys; print(cog.__file__); print(*sys.version_info[:2])")
    assert probe.ok, probe.err
    where, version = probe.out.splitlines()
    assert where.startswith(str(site)) and version == f"{sys.version_info[0]} {sys.version_info[1]}"
    # Copied once: another agent on the same directories (and this one, again) finds it.
    inode = site.stat().st_ino
    again = await cache.materialize(replica)
    assert again.cached and again.python == env.python
    twin = EnvCache(open_dir / "state", fetch=server.fetch, root=open_dir / "envs", python=str(agent), other_users=True)
    other = await twin.materialize(replica)
    assert other.cached and other.python == env.python and site.stat().st_ino == inode
    assert [p.name for p in (open_dir / "envs" / "base-site").iterdir()] == [site.name]


async def test_the_agents_own_python_when_job_users_can_use_it(open_dir: Path, tmp_path: Path) -> None:
    server = Server()
    cache = EnvCache(open_dir / "state", fetch=server.fetch, root=open_dir / "envs", python=sys.executable)
    env = await cache.materialize(server.version(tmp_path, []))  # jobs as the agent's user: nothing to check
    assert env.python == sys.executable and not list((open_dir / "envs" / "base-site").iterdir())
    reachable = base_env.as_job_user(sys.executable, "import cog").ok
    cache = EnvCache(
        open_dir / "state2", fetch=server.fetch, root=open_dir / "envs2", python=sys.executable, other_users=True
    )
    env = await cache.materialize(server.version(tmp_path, []))
    copies = list((open_dir / "envs2" / "base-site").iterdir())
    assert (env.python == sys.executable) is reachable and bool(copies) is not reachable
