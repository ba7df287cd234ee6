"""Model environments on a host (runner/envs.py): the base environment, a per-version venv built
offline from a local wheel, the caches, one build for concurrent replicas, and what is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import stat
import sys
import zipfile
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from gpufleet.agent.runner.envs import EnvCache, EnvironmentFailed, PipOptions
from gpufleet.inference.archive import pack, version_digest
from gpufleet.schemas.runner import ReplicaAssignmentOut

PREDICT = "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    def predict(self) -> str:\n        return 'x'\n"


def make_wheel(folder: Path, name: str = "gftiny", version: str = "1.0", value: int = 42) -> Path:
    """A pure-Python wheel written by hand: no build backend, no network."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gpufleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}"

    lines = [record(p, d) for p, d in files.items()] + [f"{info}/RECORD,,", ""]
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{info}/RECORD", "\n".join(lines))
    return wheel


class Server:
    """Stands in for GET /v1/agent/model-versions/{id}/archive: counts downloads."""

    def __init__(self) -> None:
        self.archives: dict[UUID, bytes] = {}
        self.downloads = 0
        self.lie = False

    async def fetch(self, version_id: UUID) -> tuple[bytes, str | None]:
        self.downloads += 1
        await asyncio.sleep(0.01)
        data = self.archives[version_id]
        return (data + b"x" if self.lie else data), None

    def version(self, tmp: Path, packages: list[str], *, text: str = PREDICT) -> ReplicaAssignmentOut:
        src = tmp / f"model-{len(self.archives)}"
        src.mkdir()
        (src / "predict.py").write_text(text)
        (src / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
        archive = pack(src)
        vid = uuid4()
        self.archives[vid] = archive
        return ReplicaAssignmentOut(
            replica_id=uuid4(),
            deployment="acme/echo",
            model="acme/echo",
            version_id=vid,
            digest=version_digest("acme", "echo", archive),
            predict_ref="predict.py:Predictor",
            python_packages=packages,
            python_version=None,
            gpu=False,
            is_generator=False,
            concurrency=1,
        )


@pytest.fixture
def server() -> Server:
    return Server()


def _cache(tmp: Path, server: Server, **pip: object) -> EnvCache:
    return EnvCache(tmp / "state", fetch=server.fetch, root=tmp / "envs", pip=PipOptions(**pip))  # type: ignore[arg-type]


def _world_readable(root: Path) -> bool:
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if not st.st_mode & stat.S_IROTH or st.st_mode & stat.S_IWOTH or st.st_mode & stat.S_IWGRP:
            return False
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
    return True


async def test_a_model_without_packages_runs_with_the_agents_interpreter(tmp_path: Path, server: Server) -> None:
    cache = _cache(tmp_path, server)
    replica = server.version(tmp_path, [])
    env = await cache.materialize(replica)
    assert env.python == sys.executable and not env.cached and server.downloads == 1
    assert (env.src / "predict.py").read_text() == PREDICT and _world_readable(env.src)
    archive = tmp_path / "state" / "models" / f"{replica.digest}.tar.gz"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # the archive stays the agent's
    again = await cache.materialize(replica)
    assert again.cached and server.downloads == 1 and again.environment_s < env.environment_s + 1
    # The unpacked copy lost: unpacked again from the archive kept in the state dir, no download.
    import shutil

    shutil.rmtree(env.src)
    third = await cache.materialize(replica)
    assert not third.cached and server.downloads == 1 and (third.src / "predict.py").exists()


async def test_a_version_with_packages_gets_its_venv_built_offline_once(tmp_path: Path, server: Server) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    cache = _cache(tmp_path, server, no_index=True, find_links=(str(wheels),))
    replica = server.version(tmp_path, ["gftiny==1.0"])
    env = await cache.materialize(replica)
    assert not env.cached and env.python != sys.executable and Path(env.python).parent.name == "bin"
    probe = "import gftiny, cog; print(gftiny.VALUE, cog.__name__)"
    proc = await asyncio.create_subprocess_exec(env.python, "-c", probe, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode().split() == ["42", "cog"]  # its own package, and cog from the agent's environment
    venv = Path(env.python).parent.parent
    assert _world_readable(venv) and _world_readable(env.src)
    again = await cache.materialize(replica)
    assert again.cached and again.python == env.python and again.environment_s < 1.0
    # Another version with the same packages shares the venv; its files are its own.
    other = server.version(tmp_path, ["gftiny==1.0"], text=PREDICT.replace("'x'", "'y'"))
    shared = await cache.materialize(other)
    assert shared.python == env.python and not shared.cached and shared.src != env.src


async def test_concurrent_replicas_of_one_version_build_it_once(tmp_path: Path, server: Server) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    cache = _cache(tmp_path, server, no_index=True, find_links=(str(wheels),))
    # Two caches over the same directories: two agents of one machine (the flock), and two
    # replicas of one agent (the same cache).
    twin = _cache(tmp_path, server, no_index=True, find_links=(str(wheels),))
    replica = server.version(tmp_path, ["gftiny"])
    envs = await asyncio.gather(cache.materialize(replica), cache.materialize(replica), twin.materialize(replica))
    assert len({e.python for e in envs}) == 1 and server.downloads == 1
    # One request unpacks the version and one builds the venv (the same one, or two when another
    # took the venv's lock first); whoever built nothing reports it cached.
    built = [e for e in envs if not e.cached]
    assert 1 <= len(built) <= 2 and any(e.cached for e in envs), [e.cached for e in envs]


async def test_a_failed_install_says_what_pip_said(tmp_path: Path, server: Server) -> None:
    cache = _cache(tmp_path, server, no_index=True, find_links=(str(tmp_path / "nothing"),))
    replica = server.version(tmp_path, ["gf-not-there==9"])
    with pytest.raises(EnvironmentFailed) as failed:
        await cache.materialize(replica)
    message = str(failed.value)
    assert message.startswith("pip install failed (exit 1):") and "gf-not-there" in message
    assert "No matching distribution" in message or "Could not find a version" in message
    assert not list((tmp_path / "envs" / "venvs").iterdir())  # nothing half-built is kept


async def test_what_is_refused(tmp_path: Path, server: Server) -> None:
    cache = _cache(tmp_path, server, no_index=True)
    for bad in ("--index-url=http://elsewhere/simple", "pkg @ https://example.com/x.whl", "./local", "/abs/path"):
        with pytest.raises(EnvironmentFailed, match="not a requirement specifier"):
            await cache.materialize(server.version(tmp_path, [bad]))
    # An archive that does not match its digest (a server bug, or tampering on the way).
    assert server.downloads == 0  # refused before anything was fetched
    server.lie = True
    with pytest.raises(EnvironmentFailed, match="does not match its digest"):
        await cache.materialize(server.version(tmp_path, []))
    assert not list((tmp_path / "envs" / "versions").iterdir())


def test_pip_options_for_air_gapped_hosts() -> None:
    assert PipOptions().args() == ["--only-binary", ":all:"]
    options = PipOptions(
        index_url="https://mirror/simple",
        extra_index_urls=("https://b/simple",),
        find_links=("/srv/wheels",),
        no_index=True,
        allow_source=True,
    )
    assert options.args() == [
        "--no-index",
        "--index-url",
        "https://mirror/simple",
        "--extra-index-url",
        "https://b/simple",
        "--find-links",
        "/srv/wheels",
    ]
