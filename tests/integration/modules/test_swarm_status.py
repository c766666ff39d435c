"""swarm_status against a REAL Docker daemon. Nothing here is faked.

* First, with the daemon outside any swarm (as on a fresh machine), the module
  must refuse with a clear message.
* Then the daemon is made a single-node swarm manager (by the backend tests'
  harness, and left again at the end only if this module made it one): the
  module's nodes and quorum must match ``docker node ls``; exact expectations
  by node ID give no missing or unexpected node; a bogus expected node fails
  the module; check mode reports the same.

A multi-node swarm is checked by playbooks/verify.yml in every Molecule
scenario, which fails the converge when swarm_status finds the swarm unhealthy.

    .venv/bin/pytest -q tests/integration/modules/test_swarm_status.py
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import docker
import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MODULE = "dask_swarm.gateway.swarm_status"

sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
import harness  # noqa: E402  (the single-node swarm the backend tests use too)


@pytest.fixture(scope="module")
def client():
    api = docker.APIClient(version="auto", timeout=30)
    api.ping()
    yield api
    api.close()


@pytest.fixture(scope="module")
def host_manager(client):
    engine = harness.docker_client()
    initialised = harness.ensure_swarm(engine)
    yield client
    if initialised:
        harness.leave_swarm(engine)
    engine.close()


def run_module(args, *extra):
    env = dict(
        os.environ,
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    proc = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", MODULE, "-a", json.dumps(args)] + list(extra),
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"\| (?:SUCCESS|FAILED!?) => (\{.*\})", proc.stdout, re.S)
    assert match, proc.stdout + proc.stderr
    return proc.returncode, json.loads(match.group(1))


def by_role(nodes):
    managers = sorted(n["ID"] for n in nodes if n["Spec"]["Role"] == "manager")
    workers = sorted(n["ID"] for n in nodes if n["Spec"]["Role"] == "worker")
    return managers, workers


# -- host daemon outside a swarm --------------------------------------------------


def test_refuses_a_daemon_outside_a_swarm(client):
    state = client.info()["Swarm"].get("LocalNodeState")
    assert state == "inactive", (
        "this test needs the daemon outside any swarm, as on a fresh machine; it is %s" % state
    )
    rc, result = run_module({"report_only": True})
    assert rc != 0
    assert "is not an active swarm node" in result["msg"]


# -- host daemon as a single-node swarm manager ----------------------------------


def test_report_matches_docker_node_ls(host_manager):
    rc, result = run_module({"report_only": True})
    assert rc == 0, result
    raw = host_manager.nodes()
    assert sorted(n["id"] for n in result["nodes"]) == sorted(n["ID"] for n in raw)
    states = dict((n["ID"], (n["Status"]["State"], n["Spec"]["Availability"])) for n in raw)
    assert dict((n["id"], (n["state"], n["availability"])) for n in result["nodes"]) == states
    managers, _ = by_role(raw)
    reachable = [n for n in raw if (n.get("ManagerStatus") or {}).get("Reachability") == "reachable"]
    assert result["quorum"]["managers"] == len(managers)
    assert result["quorum"]["reachable"] == len(reachable)
    assert result["quorum"]["needed"] == len(managers) // 2 + 1
    assert result["changed"] is False


def test_expecting_the_actual_node_ids_finds_nothing_missing_or_unexpected(host_manager):
    managers, workers = by_role(host_manager.nodes())
    rc, result = run_module({"expected_managers": managers, "expected_workers": workers, "report_only": True})
    assert rc == 0, result
    assert result["missing"] == [] and result["unexpected"] == [] and result["wrong_role"] == []
    assert {n["expected_as"] for n in result["nodes"]} <= {"manager", "worker"}


def test_a_missing_node_fails_the_module(host_manager):
    managers, workers = by_role(host_manager.nodes())
    rc, result = run_module({"expected_managers": managers, "expected_workers": workers + ["no-such-node-7f3a"]})
    assert rc != 0
    assert "missing worker no-such-node-7f3a: no node has this ID or hostname" in result["msg"]
    assert result["msg"].startswith("the swarm is unhealthy: ")


def test_check_mode_reports_the_same(host_manager):
    managers, workers = by_role(host_manager.nodes())
    args = {"expected_managers": managers, "expected_workers": workers, "report_only": True}
    _, normal = run_module(args)
    rc, checked = run_module(args, "--check")
    assert rc == 0
    assert checked["problems"] == normal["problems"] and checked["quorum"]["managers"] == normal["quorum"]["managers"]
