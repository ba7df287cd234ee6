"""`gpufleet simulate` through Typer's test runner, on tiny trace files."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from gpufleet.cli.simulate import register

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,1,2,T4\nn1,64000,1,8,G2\n"
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
    "a,4000,1,1,1000,\nb,2000,1,1,300,\nc,8000,1,0,0,\nd,4000,1,4,1000,G2\n"
)


def app() -> typer.Typer:
    application = typer.Typer()
    register(application)

    @application.callback()
    def main() -> None:
        """Test CLI."""

    return application


def files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "n.csv").write_text(NODES)
    (tmp_path / "p.csv").write_text(PODS)
    return str(tmp_path / "n.csv"), str(tmp_path / "p.csv")


def test_json_output(tmp_path: Path) -> None:
    nodes, pods = files(tmp_path)
    result = CliRunner().invoke(
        app(), ["simulate", "--nodes", nodes, "--pods", pods, "--seeds", "1-3", "--policy", "fgd", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["policy"] == "fgd" and out["gpus"] == 10 and out["jobs_in_list"] == 4
    assert [s["seed"] for s in out["seeds"]] == [1, 2, 3]
    assert set(out["mean"]) >= {"alloc_pct_at_100", "alloc_pct_at_end", "frag_pct_at_90", "failed"}
    assert 0 < out["mean"]["alloc_pct_at_end"] <= 100
    assert (out["max_candidates"], out["scan_limit"]) == (64, 32)  # the bounds production runs with


def test_bounds_can_be_lifted(tmp_path: Path) -> None:
    nodes, pods = files(tmp_path)
    args = ["simulate", "--nodes", nodes, "--pods", pods, "--seeds", "1", "--json"]
    result = CliRunner().invoke(app(), [*args, "--max-candidates", "0", "--scan-limit", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["max_candidates"], out["scan_limit"]) == (None, None)


def test_table_output(tmp_path: Path) -> None:
    nodes, pods = files(tmp_path)
    result = CliRunner().invoke(app(), ["simulate", "--nodes", nodes, "--pods", pods, "--seeds", "4,5"])
    assert result.exit_code == 0, result.output
    assert "alloc@130%" in result.stdout
    assert "mean" in result.stdout


def test_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    _, pods = files(tmp_path)
    result = CliRunner().invoke(app(), ["simulate", "--nodes", str(tmp_path / "none.csv"), "--pods", pods])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "none.csv: no such file" in result.stderr
    assert "Traceback" not in result.output


def test_bad_column_and_bad_seeds_and_bad_policy(tmp_path: Path) -> None:
    nodes, pods = files(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu\nx,1\n")
    cases = [
        (["--nodes", nodes, "--pods", str(bad)], "missing column(s)"),
        (["--nodes", nodes, "--pods", pods, "--seeds", "9-3"], "bad seed range"),
        (["--nodes", nodes, "--pods", pods, "--policy", "magic"], "unknown policy"),
        (["--nodes", nodes, "--pods", pods, "--inflation", "0"], "--inflation"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app(), ["simulate", *args])
        assert result.exit_code == 2, args
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
