"""swarm_status against a REAL Docker daemon. Nothing here is faked.

These tests never create, join or leave a swarm: they read whatever state the
daemon is in and check the module's report against what the Docker SDK says.

* Host daemon in swarm mode as a manager (another suite, e.g. the backend's,
  may have run ``docker swarm init``): the module's nodes and quorum must match
  ``docker node ls``; exact expectations by node ID give no missing or
  unexpected node; a bogus expected node fails the module.
* Host daemon not in a swarm: the module must refuse with a clear message.
  One of these two groups is skipped, depending on the daemon's state.
* Opt-in, multi-node: ``SWARM_STATUS_CONTAINER=<name>`` names a running
  container that is a manager of a swarm (for example a Molecule node of this
  collection, which has the Docker SDK installed); the module then runs inside
  it through the community.docker.docker connection plugin.

    .venv/bin/pytest -q tests/integration/modules/test_swarm_status.py
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MODULE = "dask_swarm.gateway.swarm_status"


def daemon_swarm():
    try:
        client = docker.APIClient(version="auto", timeout=10)
    except docker.errors.DockerException as exc:
        pytest.skip("no Docker daemon: %s" % exc)
    try:
        return client, (client.info().get("Swarm") or {})
    except Exception as exc:  # pragma: no cover - depends on the machine
        client.close()
        pytest.skip("Docker daemon does not answer: %s" % exc)


@pytest.fixture()
def host_manager():
    client, swarm = daemon_swarm()
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        client.close()
        pytest.skip("the host daemon is not a swarm manager (state %s)" % swarm.get("LocalNodeState"))
    yield client
    client.close()


def run_module(args, *extra, host="localhost"):
    env = dict(
        os.environ,
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    proc = subprocess.run(
        [str(BIN / "ansible"), host, "-m", MODULE, "-a", json.dumps(args)] + list(extra),
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


# -- host daemon in swarm mode (the state of another suite; read only) -----------


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


# -- host daemon outside a swarm --------------------------------------------------


def test_refuses_a_daemon_outside_a_swarm():
    client, swarm = daemon_swarm()
    client.close()
    if swarm.get("LocalNodeState") == "active":
        pytest.skip("the host daemon is in a swarm")
    rc, result = run_module({"report_only": True})
    assert rc != 0
    assert "is not an active swarm node" in result["msg"]


# -- opt-in: a multi-node swarm inside containers ------------------------------------


@pytest.mark.skipif(not os.environ.get("SWARM_STATUS_CONTAINER"), reason="set SWARM_STATUS_CONTAINER to a manager container")
def test_inside_a_manager_container():
    name = os.environ["SWARM_STATUS_CONTAINER"]
    out = subprocess.run(
        ["docker", "exec", name, "docker", "node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    rows = [line.split(" ", 1) for line in out if line.strip()]
    managers = sorted(r[0] for r in rows if len(r) > 1 and r[1].strip())
    workers = sorted(r[0] for r in rows if len(r) == 1 or not r[1].strip())
    rc, result = run_module(
        {"expected_managers": managers, "expected_workers": workers, "report_only": True},
        "-i",
        "%s," % name,
        "-c",
        "community.docker.docker",
        host=name,
    )
    assert rc == 0, result
    assert sorted(n["id"] for n in result["nodes"]) == sorted(managers + workers)
    assert result["missing"] == [] and result["unexpected"] == []
    assert result["quorum"]["managers"] == len(managers)
