"""The CLI against a real server: organizations, members, invites, keys; --json; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli.main import app
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer


@pytest.fixture
def cli(live: LiveServer, owner: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    monkeypatch.setenv("GPUFLEET_API_KEY", owner.key)
    monkeypatch.setenv("GPUFLEET_CONFIG_DIR", str(tmp_path / "cfg"))
    runner = CliRunner()

    def run(*args: str, key: str | None = None) -> tuple[int, str, str]:
        env = {"GPUFLEET_API_KEY": key} if key else None
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.stdout, result.stderr

    return run


def test_whoami_and_orgs(cli, owner: Tenant) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("whoami", "--json")
    assert code == 0 and json.loads(out)["user"]["email"] == owner.user.email
    code, out, _ = cli("orgs", "create", "CLI Org", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["organization"]["slug"] == "cli-org" and created["api_key"]["secret"].startswith("gfk_")
    code, out, _ = cli("orgs", "list", "--json")
    assert {o["organization_slug"] for o in json.loads(out)} >= {"cli-org", owner.org.slug}
    code, out, _ = cli("orgs", "show", str(owner.org.id))
    assert code == 0 and owner.org.slug in out


def test_invite_accept_and_keys(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("invites", "create", "dev@example.com", "--role", "member", "--json")
    assert code == 0
    token = json.loads(out)["token"]
    code, out, _ = cli("invites", "accept", token, "--name", "Dev", "--json")
    assert code == 0
    dev_key = json.loads(out)["api_key"]["secret"]
    code, out, _ = cli("members", "list", "--json")
    assert "dev@example.com" in {m["email"] for m in json.loads(out)}
    code, out, _ = cli("keys", "create", "laptop", "--json", key=dev_key)
    assert code == 0 and json.loads(out)["role"] == "member"
    key_id = json.loads(out)["id"]
    code, out, _ = cli("keys", "list", "--json", key=dev_key)
    listed = json.loads(out)
    assert key_id in {k["id"] for k in listed} and "secret" not in listed[0]
    code, out, _ = cli("keys", "revoke", key_id, "--json", key=dev_key)
    assert code == 0 and json.loads(out)["revoked_at"]


def test_errors_are_one_line_with_nonzero_exit(cli, owner: Tenant) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("invites", "create", "x@example.com", key=owner.key[:-3] + "abc")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "401" in err
    code, _, err = cli("members", "set-role", str(owner.user.id), "viewer")
    assert code == 1 and "last owner" in err and err.strip().count("\n") == 0
    code, _, err = cli("orgs", "show", "not-a-uuid")
    assert code != 0
