"""What `make demo` prints for logging in, for each gateway_auth of the
sandbox's inventory: scripts/sandbox.sh's own functions, sourced, against an
inventory of the test's (its group_vars/all.yml), with no fleet."""

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def print_connect(tmp_path: Path, **group_vars) -> subprocess.CompletedProcess:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    base = {"gateway_password_file": str(tmp_path / "fleet.password"), "gateway_tls": "none",
            "gateway_user_password_dir": str(tmp_path / "fleet.users"), "gateway_users": ["alice", "bob"],
            "gateway_admins": ["alice"]}
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump({**base, **group_vars}), encoding="utf-8")
    script = f'source scripts/sandbox.sh && INVENTORY="{inventory}" && print_connect 7'
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_shared_password_logs_in_under_any_name(tmp_path):
    out = print_connect(tmp_path).stdout  # gateway_auth: the role's default without the hub, simple
    assert f"  Password:  in {tmp_path}/fleet.password (mode 0600); any user name\n" in out, out
    assert f'password = open("{tmp_path}/fleet.password").read().strip()' in out, out
    assert 'auth=BasicAuth("me", password)' in out, out


def test_accounts_log_in_by_name_with_their_own_password(tmp_path):
    out = print_connect(tmp_path, gateway_auth="users").stdout
    assert "any user name" not in out, out
    assert "  Log in as: alice, bob (admins: alice)\n" in out, out
    assert f"  Passwords: one per user in {tmp_path}/fleet.users/<user>.password (mode 0600)\n" in out, out
    assert f'password = open("{tmp_path}/fleet.users/alice.password").read().strip()' in out, out
    assert 'auth=BasicAuth("alice", password)' in out, out


@pytest.mark.parametrize("auth, says", [("jupyterhub", "logs in through the hub: make demo JUPYTERHUB=1"),
                                        ("kerberos", "is none of simple, users and jupyterhub")])
def test_an_auth_with_no_login_to_print_is_named(tmp_path, auth, says):
    proc = print_connect(tmp_path, gateway_auth=auth)
    assert proc.returncode != 0
    assert f"sandbox: gateway_auth: {auth} in {tmp_path}/inventory {says}" in proc.stderr
