"""`gpufleet models ...` and `gpufleet files ...` against a live server, through the SDK."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli.common import console
from gpufleet.cli.main import app
from gpufleet.inference import archive
from gpufleet.sdk import AsyncClient, Client
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(console, "width", 220)
    return CliRunner()


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


def test_create_push_show_versions_from_the_cli(cli: CliRunner, owner: Tenant, tmp_path: Path) -> None:
    ref = f"{owner.org.slug}/echo"
    assert _ok(cli, "models", "list").startswith("no models yet: `gpufleet models create ORG/NAME`")
    assert json.loads(_ok(cli, "models", "list", "--json")) == []
    out = _ok(cli, "models", "create", ref, "--gpu-fraction", "0.5", "--min-memory-gb", "4", "--description", "echo")
    assert f"model {ref} created (0.5 GPU >=4 GiB)" in out
    digest = archive.version_digest(owner.org.slug, "echo", archive.pack(EXAMPLES / "echo"))
    out = _ok(cli, "models", "push", str(EXAMPLES / "echo"), ref)
    assert f"{ref} version {digest} (new;" in out and "inputs: text, repeat, case, reverse, separator" in out
    assert "(unchanged" in _ok(cli, "models", "push", str(EXAMPLES / "echo"), ref)
    assert _ok(cli, "models", "push", "-q", str(EXAMPLES / "echo"), ref) == digest + "\n"
    shown = _ok(cli, "models", "show", ref)
    assert digest in shown and "required" in shown and "<= 10" in shown and "as-is, upper, lower" in shown
    assert digest[:12] in _ok(cli, "models", "versions", ref)
    assert ref in _ok(cli, "models", "list")
    listed = json.loads(_ok(cli, "models", "list", "--json"))
    assert listed[0]["latest_version"]["id"] == digest
    assert "1x GPU" in _ok(cli, "models", "update", ref, "--gpus", "1", "--description", "new words")
    assert cli.invoke(app, ["models", "update", ref]).exit_code == 2
    assert "deleted" in _ok(cli, "models", "delete", ref, "--version", digest, "--yes")
    assert json.loads(_ok(cli, "models", "show", ref, "--json"))["latest_version"] is None


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"predict.py": "x = 1\n"}, "cog.yaml: missing"),
        ({"cog.yaml": 'predict: "predict.py:Predictor"\n', "predict.py": "class Predictor(:\n"}, "predict.py line 1"),
        (
            {
                "cog.yaml": 'predict: "predict.py:Predictor"\n',
                "predict.py": "class Predictor:\n    def predict(self, x: dict) -> str: ...\n",
            },
            "parameter 'x': an input cannot be dict",
        ),
    ],
)
def test_push_refuses_a_bad_directory_in_one_line(
    cli: CliRunner, owner: Tenant, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = cli.invoke(app, ["models", "push", str(tmp_path), f"{owner.org.slug}/echo"])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_first_push_creates_the_model_and_a_bad_ref_is_refused(cli: CliRunner, owner: Tenant) -> None:
    ref = f"{owner.org.slug}/fresh"
    out = _ok(cli, "models", "push", str(EXAMPLES / "echo"), ref)
    assert f"created model {ref} (CPU only per replica)" in out and "(new;" in out
    shown = json.loads(_ok(cli, "models", "show", ref, "--json"))
    assert shown["latest_version"]["id"] in out and shown["hardware"]["gpus"] == 0, shown
    result = cli.invoke(app, ["models", "push", str(EXAMPLES / "echo"), "some-other-org/nope"])
    assert result.exit_code == 1 and "not found" in result.stderr, result.stderr
    result = cli.invoke(app, ["models", "push", str(EXAMPLES / "echo"), "no-slash"])
    assert result.exit_code == 2 and "OWNER/NAME" in result.stderr


def test_files_from_the_cli(cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "input.txt"
    src.write_text("hello file")
    out = _ok(cli, "files", "upload", str(src), "--metadata", '{"a": 1}')
    file_id = out.split()[1]
    assert "/v1/files/" in out
    assert "input.txt" in _ok(cli, "files", "list")
    shown = json.loads(_ok(cli, "files", "show", file_id[:8], "--json"))
    assert shown["metadata"] == {"a": 1} and shown["content_type"] == "text/plain"
    target = tmp_path / "copy.txt"
    _ok(cli, "files", "download", file_id[:8], "-o", str(target))
    assert target.read_text() == "hello file"
    _ok(cli, "files", "delete", file_id)
    assert "input.txt" not in _ok(cli, "files", "list")


async def test_the_sdk_sync_and_async(live: LiveServer, owner: Tenant, tmp_path: Path) -> None:
    ref = f"{owner.org.slug}/gen"
    model_dir = tmp_path / "gen"
    shutil.copytree(EXAMPLES / "text-generation", model_dir)
    with Client(live.url, owner.key) as gf:
        m = gf.create_model("gen", gpus=0)
        assert m.hardware.label == "CPU"
        version, created = gf.push_model(model_dir, ref)
        assert created and version.is_generator
        assert gf.get_model(ref).latest_version is not None
        f = gf.upload_file(b"abc", filename="a.bin")
        assert gf.download_file(f.id) == b"abc"
    async with AsyncClient(live.url, owner.key) as agf:
        (model_dir / "README.md").write_text("changed")
        version2, created2 = await agf.push_model(model_dir, ref)
        assert created2 and version2.id != version.id
        assert [v.id for v in await agf.list_model_versions(ref)] == [version2.id, version.id]
        assert (await agf.get_model(ref)).latest_version.id == version2.id  # type: ignore[union-attr]
        assert [x.id for x in await agf.list_files()] == [f.id]
        await agf.delete_model(ref)
        assert await agf.list_models() == []
