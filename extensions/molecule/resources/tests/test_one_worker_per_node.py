"""gateway_one_worker_per_node: Swarm places at most one Dask worker per node.

Reruns the gateway play with the option on, as an admin would, asks for one
worker more than there are worker nodes, and checks that each worker node
runs exactly one, the extra one waits with Swarm's reason, and the cluster
computes. The play is rerun without the option afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import Fleet, worker_tasks

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, open_client, open_cluster, wait_for  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

# One scenario is enough: the default one (simple auth) has two worker nodes.
pytestmark = [pytest.mark.auth("simple"), pytest.mark.changes_deployment, pytest.mark.gateway_variant]

NODE_ENV = "DASK_SWARM_NODE_ID"
CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}
SLOT_TAKEN = "host-mode port already in use"


def test_one_worker_per_node(rerun_gateway, gateway_vars, login, worker_nodes, fleet: Fleet) -> None:
    rerun_gateway("-e", '{"gateway_one_worker_per_node": true}')
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(*login))
    try:
        with open_cluster(gateway, **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, len(worker_nodes) + 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, len(worker_nodes), timeout=180)
                wait_for(
                    lambda: [t for t in worker_tasks(fleet, cluster.name) if SLOT_TAKEN in t["err"]],
                    60,
                    message=f"a worker task pending with {SLOT_TAKEN!r}",
                )
                # The extra worker keeps waiting: sampled for a while, never a
                # second worker on a node.
                for _ in range(5):
                    running = [t["node"] for t in worker_tasks(fleet, cluster.name) if t["state"] == "running"]
                    assert sorted(running) == sorted(set(running)), f"two workers on one node: {running}"
                    time.sleep(1)
                ran_on = list(call(client.run, lambda: os.environ[NODE_ENV]).values())
                assert sorted(ran_on) == sorted(worker_nodes), f"workers ran on {ran_on}, one per {sorted(worker_nodes)}"
                assert call(client.submit(sum, range(100)).result) == 4950
    finally:
        close_gateway(gateway)
        rerun_gateway()
