"""The admin CLI through Typer's CliRunner: every command, human and --json output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import asyncssh
import pytest
from typer.testing import CliRunner

from relay.cli import app
from relay.store import Store

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path / "data"


def run(data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.output


def run_json(data_dir: Path, *args: str) -> dict[str, object]:
    code, out = run(data_dir, *args, "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def test_user_lifecycle(data_dir: Path) -> None:
    doc = run_json(data_dir, "user", "add", "alice")
    token = str(doc["token"])
    assert token.startswith("rly_")
    assert Store.open(data_dir).verify_token(token) is not None
    users = run_json(data_dir, "user", "list")["users"]
    assert [u["name"] for u in users] == ["alice"]  # type: ignore[attr-defined]
    names = run_json(data_dir, "name", "list")["names"]
    assert names == [{"name": "alice", "user": "alice"}]
    code, out = run(data_dir, "user", "add", "alice")
    assert code == 1 and "already exists" in out
    code, out = run(data_dir, "user", "add", "www")
    assert code == 1 and "reserved" in out
    code, out = run(data_dir, "user", "add", "Bad_Name")
    assert code == 1 and "invalid name" in out
    assert run_json(data_dir, "user", "remove", "alice") == {"removed": "alice"}
    assert Store.open(data_dir).verify_token(token) is None
    code, out = run(data_dir, "user", "remove", "alice")
    assert code == 1 and "no user 'alice'" in out


def test_tokens(data_dir: Path) -> None:
    run_json(data_dir, "user", "add", "bob")
    created = run_json(data_dir, "token", "create", "bob", "--label", "laptop", "--expires", "30d")
    assert created["label"] == "laptop" and created["expires_at"]
    listed = run_json(data_dir, "token", "list", "bob")["tokens"]
    assert len(listed) == 2  # type: ignore[arg-type]
    assert all("hash" not in t and "token" not in t for t in listed)  # type: ignore[attr-defined]
    assert run_json(data_dir, "token", "revoke", str(created["id"])) == {"revoked": created["id"]}
    assert Store.open(data_dir).verify_token(str(created["token"])) is None
    code, out = run(data_dir, "token", "create", "bob", "--expires", "soon")
    assert code == 1 and "invalid duration" in out
    code, out = run(data_dir, "token", "create", "nobody")
    assert code == 1 and "no user" in out


def test_keys(data_dir: Path, tmp_path: Path) -> None:
    run_json(data_dir, "user", "add", "carol")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="carol@laptop")
    pub = tmp_path / "id.pub"
    pub.write_bytes(key.export_public_key())
    info = run_json(data_dir, "key", "add", "carol", str(pub))
    assert info["fingerprint"] == key.get_fingerprint("sha256")
    assert info["comment"] == "carol@laptop"
    code, out = run(data_dir, "key", "add", "carol", str(pub))
    assert code == 1 and "already registered" in out
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    code, out = run(data_dir, "key", "add", "carol", str(bad))
    assert code == 1 and "not an OpenSSH public key" in out
    assert len(run_json(data_dir, "key", "list")["keys"]) == 1  # type: ignore[arg-type]
    assert run_json(data_dir, "key", "remove", str(info["id"])) == {"removed": info["id"]}


def test_names_release_and_tunnels_when_not_running(data_dir: Path) -> None:
    run_json(data_dir, "user", "add", "dave")
    assert run_json(data_dir, "name", "release", "dave") == {"released": "dave"}
    code, out = run(data_dir, "name", "release", "dave")
    assert code == 1 and "not owned" in out
    assert run_json(data_dir, "tunnels") == {"running": False, "tunnels": []}
    code, out = run(data_dir, "tunnels")
    assert code == 0 and "no relay serve is running" in out


def test_serve_rejects_bad_options(data_dir: Path) -> None:
    code, out = run(data_dir, "serve", "--domain", "bad domain")
    assert code == 1 and "invalid --domain" in out
    code, out = run(data_dir, "serve", "--public-url", "https://a.example.com", "--domain", "b.example.com")
    assert code == 1 and "must be the relay domain" in out
    code, out = run(data_dir, "serve", "--https-port", "8443")
    assert code == 1 and "--tls-cert" in out
    code, out = run(data_dir, "serve", "--trust-proxy", "not-a-net")
    assert code == 1 and "invalid --trust-proxy" in out


def test_help_explains(data_dir: Path) -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--domain", "--http-port", "--ssh-port", "--public-url", "--trust-proxy", "--data-dir"):
        assert flag in result.output


def test_world_readable_data_dir_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    code, out = run(loose, "user", "list")
    assert code == 1 and "accessible by other users" in out and str(loose) in out
