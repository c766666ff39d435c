"""Where workers go on a multi-node swarm: node pools.

Runs on a fleet whose inventory offers node pools (gateway_node_pools: the
ha scenario). The expected nodes come from the inventory's labels; where each
worker ran is read from the worker itself (DASK_SWARM_NODE_ID).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import Fleet

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, open_client, open_cluster  # noqa: E402

WORKER_LABEL = "dask.worker"
NODE_ENV = "DASK_SWARM_NODE_ID"
CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}


def active_worker_nodes(fleet: Fleet, **labels: str) -> set[str]:
    want = {WORKER_LABEL: "true", **labels}
    return {
        node.node_id
        for node in fleet.nodes.values()
        if node.expected_availability == "active"
        and all(node.expected_labels.get(k) == v for k, v in want.items())
        # Dask workers cannot run on an emulated Pi: test_mixed_architectures
        # checks where Swarm places its pool's workers.
        and not node.emulated
    }


def ran_on(client) -> list[str]:
    return list(call(client.run, lambda: os.environ[NODE_ENV]).values())


@pytest.mark.fleet_var("gateway_node_pools")
def test_node_pools_are_offered_and_place_workers(gateway, fleet: Fleet) -> None:
    pools = list(fleet.first_manager.vars["gateway_node_pools"])
    label = fleet.first_manager.vars.get("gateway_node_pool_label", "dask.pool")
    options = call(gateway.cluster_options)
    assert set(pools) <= set(options._fields["node_pool"].options), options._fields["node_pool"].options
    emulated = {n.expected_labels.get(label) for n in fleet.nodes.values() if n.emulated}
    for pool in pools:
        nodes = active_worker_nodes(fleet, **{label: pool})
        if not nodes and pool in emulated:
            continue
        assert nodes, f"the inventory gives pool {pool} no active worker node"
        with open_cluster(gateway, node_pool=pool, **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, len(nodes))
            with open_client(cluster) as client:
                call(client.wait_for_workers, len(nodes), timeout=180)
                assert set(ran_on(client)) == nodes, f"pool {pool}: workers ran outside {sorted(nodes)}"
                assert call(client.submit(sum, range(10)).result) == 45
