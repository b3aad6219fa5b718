"""The credential commands, run as real processes on a starter home: keys, grants, token
exchange, inspection and revocation, signing key rotation, trust bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import one_line_error, run_cli

from tether.store import Store

pytestmark = (
    pytest.mark.sqlite
)  # a module-scoped home: on PostgreSQL it needs a database per module, not per test

CODER = "spiffe://tether.local/ws/acme/agent/coder"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("credentials-cli") / "home"
    assert run_cli(home, "init").returncode == 0
    return home


def coder_grant(home: Path) -> str:
    store = Store.at_home(home)
    try:
        return next(g.id for g in store.credentials.grants("acme") if g.agent == "coder")
    finally:
        store.close()


def test_an_agent_key_exchange_inspect_and_revoke(home: Path, tmp_path: Path) -> None:
    key = tmp_path / "coder.jwk"
    listed = run_cli(home, "agent", "keys", "acme", "coder", "--generate", str(key))
    assert listed.returncode == 0, listed.stderr
    private = json.loads(key.read_text())
    assert "d" in private and key.stat().st_mode & 0o777 == 0o600
    assert "active" in listed.stdout

    exchanged = run_cli(
        home,
        "token",
        "exchange",
        "--key",
        str(key),
        "--agent-id",
        CODER,
        "--grant",
        coder_grant(home),
        "--tool",
        "read_file",
        "--request",
        "fix the parser",
    )
    assert exchanged.returncode == 0, exchanged.stderr
    response = json.loads(exchanged.stdout)
    assert response["token_type"] == "DPoP" and response["scope"] == "read_file"
    assert response["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"

    inspected = run_cli(home, "token", "inspect", response["access_token"])
    assert inspected.returncode == 0, inspected.stderr
    claims = json.loads(inspected.stdout)
    assert claims["sub"] == "alice" and claims["client_id"] == CODER

    beyond = run_cli(
        home, "token", "exchange", "--key", str(key), "--agent-id", CODER,
        "--grant", coder_grant(home), "--tool", "refund_customer",
    )  # fmt: skip
    assert "scope asks for ['refund_customer']" in one_line_error(beyond)

    revoked = run_cli(home, "token", "revoke", "--task", response["task_id"])
    assert revoked.returncode == 0, revoked.stderr
    refused = run_cli(home, "token", "inspect", response["access_token"])
    assert refused.returncode == 3 and "was revoked" in refused.stdout


def test_grants_are_listed_added_and_revoked(home: Path) -> None:
    added = run_cli(
        home, "grant", "add", "acme", "--user", "bob", "--agent", "monitor",
        "--tool", "read_logs", "--max-ttl", "600",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    grant_id = added.stdout.split()[1].rstrip(":")
    assert grant_id.startswith("grant_")
    assert grant_id in run_cli(home, "grant", "list", "acme").stdout.replace("\n", "")
    assert run_cli(home, "grant", "revoke", grant_id).returncode == 0
    assert run_cli(home, "user", "add", "acme", "carol", "--role", "approver").returncode == 0
    assert "carol" in run_cli(home, "user", "list", "acme").stdout
    unknown = run_cli(
        home, "grant", "add", "acme", "--user", "mallory", "--agent", "coder", "--tool", "read_file"
    )
    assert "user 'mallory' is not a user of workspace 'acme'" in one_line_error(unknown)


def test_signing_keys_rotate_and_publish(home: Path) -> None:
    before = json.loads(run_cli(home, "keys", "jwks").stdout)["keys"]
    rotated = run_cli(home, "keys", "rotate", "--lead", "300")
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(run_cli(home, "keys", "jwks").stdout)["keys"]
    assert len(after) == len(before) + 1
    assert all(k["alg"] == "ES256" and "d" not in k for k in after)


def test_trust_bundles_are_checked_and_check_names_its_user(home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.jwks"
    bundle.write_text('{"keys": [{"kty": "oct"}]}')
    assert "not a usable JWKS bundle" in one_line_error(
        run_cli(home, "trust", "add", "acme", "prod.example", str(bundle))
    )
    unmapped = run_cli(home, "trust", "map", "acme", "spiffe://prod.example/ci", "ghost")
    assert "agent 'ghost' is not registered" in one_line_error(unmapped)
    nobody = run_cli(home, "check", "acme", "coder", "read_file", "--user", "bob")
    assert "has not delegated ['read_file'] to agent 'coder'" in one_line_error(nobody)


def test_revoking_what_does_not_exist_is_an_error(home: Path) -> None:
    assert "--agent takes WORKSPACE/AGENT" in one_line_error(
        run_cli(home, "token", "revoke", "--agent", "coder")
    )
    assert "agent 'codr' is not registered" in one_line_error(
        run_cli(home, "token", "revoke", "--agent", "acme/codr")
    )
    assert "workspace 'acmee' does not exist" in one_line_error(
        run_cli(home, "token", "revoke", "--workspace", "acmee")
    )
    refused = run_cli(home, "token", "inspect", "eyJ\udcff")
    assert refused.returncode == 3 and "refused" in refused.stdout
