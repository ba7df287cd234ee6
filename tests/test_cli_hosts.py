"""`gpufleet hosts|gpus|fleet` against a real server: tables show SIMULATED, --json for programs, one-line errors."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gpufleet.cli.common import console
from gpufleet.cli.main import app
from tests.api.agent_helpers import facts, gpus, series
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "width", 250)  # the console may have measured its width before this test
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    return run


def _register(live: LiveServer, token: str, name: str = "sim-1", n: int = 2) -> dict[str, Any]:
    body = {"name": name, "facts": facts(name), "gpus": gpus(name, n, model="H100-80GB")}
    r = httpx.post(f"{live.url}/v1/agent/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    reg: dict[str, Any] = r.json()
    beat = {"gpus": gpus(name, n, model="H100-80GB"), "metrics": [series(f"GPU-{name}-0", 5)]}
    r = httpx.post(
        f"{live.url}/v1/agent/heartbeat", json=beat, headers={"Authorization": f"Bearer {reg['credential']}"}
    )
    assert r.status_code == 200, r.text
    return reg


def test_join_token_prints_the_agent_command(cli, live: LiveServer) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("hosts", "join-token", "--max-uses", "3", "--expires", "2h")
    assert code == 0, out
    token = re.search(r"shown once\): (gfj_\S+)", out)
    assert token is not None
    assert f"GPUFLEET_JOIN_TOKEN={token[1]} gpufleet agent --server {live.url}" in out
    assert "3 use(s)" in out
    code, out, _ = cli("hosts", "join-token", "--json")
    created = json.loads(out)
    assert created["token"].startswith("gfj_") and created["max_uses"] is None
    code, out, _ = cli("hosts", "join-tokens", "--json")
    assert len(json.loads(out)) == 2 and "gfj_" not in "".join(t.get("token", "") for t in json.loads(out))
    code, out, _ = cli("hosts", "revoke-join-token", created["id"], "--json")
    assert code == 0 and json.loads(out)["revoked_at"]
    code, _, err = cli("hosts", "join-token", "--expires", "soon")
    assert code == 2 and "--expires 'soon'" in err


def test_hosts_commands(cli, live: LiveServer) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = cli("hosts", "join-token", "--json")
    reg = _register(live, json.loads(out)["token"])
    host_id = reg["host_id"]
    code, out, _ = cli("hosts", "list")
    assert code == 0 and "sim-1" in out and "SIMULATED" in out and "ready" in out
    code, out, _ = cli("hosts", "list", "--json")
    assert [h["id"] for h in json.loads(out)] == [host_id] and json.loads(out)[0]["simulated"] is True
    code, out, _ = cli("hosts", "show", host_id)
    assert code == 0 and "[SIMULATED]" in out and "GPU" not in out.split("\n")[0] and out.count("H100-80GB") == 2
    code, out, _ = cli("hosts", "drain", host_id, "--reason", "upgrade", "--json")
    assert json.loads(out)["status"] == "draining" and json.loads(out)["status_reason"] == "upgrade"
    code, out, _ = cli("hosts", "list", "--status", "draining", "--json")
    assert len(json.loads(out)) == 1
    code, out, _ = cli("hosts", "undrain", host_id)
    assert code == 0 and "ready" in out
    code, out, _ = cli("hosts", "maintenance", host_id, "--json")
    assert json.loads(out)["status"] == "maintenance"
    code, out, _ = cli("hosts", "maintenance", host_id, "--off", "--json")
    assert json.loads(out)["status"] == "ready"
    code, out, _ = cli("hosts", "revoke", host_id, "--json")
    assert json.loads(out)["revoked_at"]
    code, out, _ = cli("hosts", "remove", host_id, "--yes", "--json")
    assert code == 0 and json.loads(out)["removed_at"]
    code, out, _ = cli("hosts", "list", "--json")
    assert json.loads(out) == []
    code, _, err = cli("hosts", "show", str(uuid.uuid4()))
    assert code == 1 and "404" in err and "not found" in err and len(err.strip().splitlines()) == 1


def test_gpus_metrics_and_fleet(cli, live: LiveServer) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = cli("hosts", "join-token", "--json")
    reg = _register(live, json.loads(out)["token"])
    code, out, _ = cli("gpus", "list")
    assert code == 0 and out.count("SIMULATED") == 2 and "sim-1" in out
    code, out, _ = cli("gpus", "list", "--model", "h100", "--status", "available", "--host", reg["host_id"], "--json")
    listed = json.loads(out)
    assert [g["uuid"] for g in listed] == ["GPU-sim-1-0", "GPU-sim-1-1"]
    code, out, _ = cli("gpus", "list", "--model", "A100", "--json")
    assert json.loads(out) == []
    gpu = listed[0]["id"]
    code, out, _ = cli("gpus", "show", gpu)
    assert code == 0 and "GPU-sim-1-0" in out and "SIMULATED" in out
    code, out, _ = cli("gpus", "metrics", gpu, "--since", "1h", "--bucket", "raw", "--json")
    assert len(json.loads(out)["points"]) == 5
    code, out, _ = cli("gpus", "metrics", gpu, "--since", "15m", "--bucket", "1m", "--agg", "max")
    assert code == 0 and "Util Pct" in out
    code, out, _ = cli("gpus", "maintenance", gpu, "--json")
    assert json.loads(out)["status"] == "maintenance"
    code, out, _ = cli("gpus", "maintenance", gpu, "--off", "--json")
    assert json.loads(out)["status"] == "available"
    code, _, err = cli("gpus", "clear-health", gpu)
    assert code == 1 and "not unhealthy" in err
    code, out, _ = cli("fleet")
    assert code == 0 and "GPUs: 2" in out and "2 SIMULATED" in out and "H100-80GB" in out
    code, out, _ = cli("fleet", "--json")
    summary = json.loads(out)
    assert (
        summary["gpus_total"] == 2 and summary["hosts_by_status"] == {"ready": 1} and summary["samples_in_window"] == 5
    )
