"""The deployed Dask Gateway, used from this machine as from a user's laptop.

The stock ``dask_gateway`` client connects through the gateway port that the
first manager's container publishes on 127.0.0.1 (``gateway_public_url`` in
the scenario's inventory), with the password file the gateway role wrote on
the controller. Expected worker nodes come from the inventory's labels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import Fleet

# The client helpers of the backend's integration tests: a timeout on every
# blocking call, and Gateway/cluster objects closed exactly once.
ROOT = Path(__file__).resolve().parents[4]
ROLES = ROOT / "roles"
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, http_status, open_client, open_cluster, wait_for  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

WORKER_LABEL = "dask.worker"
CLUSTER_LABEL = "dask-gateway-swarm.cluster"
NODE_ENV = "DASK_SWARM_NODE_ID"
# Small enough that a worker fits on every node container of this machine.
CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}


@pytest.fixture(scope="module")
def gateway_vars(fleet: Fleet) -> dict[str, str]:
    """The gateway role's variables for the first manager: the inventory's,
    as Ansible templates them there, else the role's defaults."""
    manager = fleet.first_manager
    defaults = yaml.safe_load((ROLES / "gateway" / "defaults" / "main.yml").read_text(encoding="utf-8"))
    out = {}
    for var in ("gateway_public_url", "gateway_password_file", "gateway_state_dir", "gateway_stack_name"):
        if var in manager.vars:
            value = str(manager.host.ansible("ansible.builtin.debug", f"var={var}", check=False)[var])
        else:
            value = str(defaults[var])
        assert value and "{{" not in value and "<<" not in value, f"{var} of {manager.name}: {value!r}"
        out[var] = value
    out["gateway_password_file"] = os.path.expanduser(out["gateway_password_file"])
    return out


@pytest.fixture(scope="module")
def password(gateway_vars: dict[str, str]) -> str:
    value = Path(gateway_vars["gateway_password_file"]).read_text(encoding="utf-8").strip()
    assert len(value) >= 43, "the generated password is shorter than 43 characters"
    return value


@pytest.fixture(scope="module")
def worker_nodes(fleet: Fleet) -> set[str]:
    """Node IDs of the nodes Dask workers may run on: labelled and active."""
    return {
        node.node_id
        for node in fleet.nodes.values()
        if node.expected_labels.get(WORKER_LABEL) == "true" and node.expected_availability == "active"
    }


def test_cluster_computes_on_every_worker_node(gateway_vars, password, worker_nodes, fleet: Fleet) -> None:
    assert worker_nodes, "the inventory labels no active node for Dask workers"
    workers = max(2, len(worker_nodes))
    manager = fleet.first_manager
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth("molecule-verifier", password))
    try:
        with open_cluster(gateway, **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, workers)
            with open_client(cluster) as client:
                call(client.wait_for_workers, workers, timeout=180)
                # A lambda travels by value; a function of this module would not
                # import on the workers.
                ran_on = set(call(client.run, lambda: os.environ[NODE_ENV]).values())
                squares = call(client.gather, client.map(lambda x: x * x, range(200)))
                assert sum(squares) == sum(x * x for x in range(200))
                assert call(client.submit(sum, range(100)).result) == 4950
            assert ran_on == worker_nodes, (
                f"workers ran on {sorted(ran_on)}, the worker nodes are {sorted(worker_nodes)}"
            )
            name = cluster.name
            assert call(lambda: [c.name for c in gateway.list_clusters()]) == [name]
            services = f"docker service ls -q --filter label={CLUSTER_LABEL}={name}"
            assert manager.host.check_output(services), "the cluster has no Swarm service"
        wait_for(lambda: not call(gateway.list_clusters), 60, message=f"the gateway to drop {name}")
        wait_for(lambda: not manager.host.check_output(services), 60, message=f"the services of {name} to go")
    finally:
        close_gateway(gateway)


def test_wrong_password_gets_401(gateway_vars, password) -> None:
    url = gateway_vars["gateway_public_url"] + "/api/v1/clusters/"
    assert http_status(url, ("molecule-verifier", password)) == 200
    assert http_status(url, ("molecule-verifier", password[::-1])) == 401
    assert http_status(url, ("molecule-verifier", "")) == 401


def test_password_file_on_the_manager_is_root_only(gateway_vars, fleet: Fleet) -> None:
    manager = fleet.first_manager
    stored = manager.host.file(gateway_vars["gateway_state_dir"] + "/password")
    assert stored.is_file
    assert (stored.user, stored.group, stored.mode) == ("root", "root", 0o600)
    state_dir = manager.host.file(gateway_vars["gateway_state_dir"])
    assert (state_dir.user, state_dir.mode) == ("root", 0o700)


def test_password_file_on_the_controller_is_owner_only(gateway_vars, local) -> None:
    copy = local.file(gateway_vars["gateway_password_file"])
    assert copy.is_file
    assert copy.mode == 0o600


def test_password_never_in_the_ansible_output(password, ansible_log: str) -> None:
    assert "PLAY RECAP" in ansible_log, "the Ansible log holds no playbook run"
    assert password not in ansible_log, "the gateway password appears in the Ansible output"


def test_password_not_in_the_gateway_service(gateway_vars, password, fleet: Fleet) -> None:
    """It reaches the gateway as a Swarm secret file, never in its service spec."""
    manager = fleet.first_manager
    spec = manager.host.check_output("docker service inspect %s", gateway_vars["gateway_stack_name"] + "_gateway")
    assert "gateway-password" in spec, "the gateway service does not mount the password secret"
    assert password not in spec
