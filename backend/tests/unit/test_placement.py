"""The scale-time placement check: Swarm's matching rules, on nodes as the API describes them.

These are the rules; a real swarm refusing the same tasks is in
tests/integration/test_failures.py.
"""

import pytest

from dask_gateway_swarm.placement import Constraint, never_placed_reason

GIB = 2**30


def node(hostname, cpus=4, memory_gib=8, role="worker", arch="x86_64", labels=None, engine_labels=None):
    return {
        "ID": f"id-{hostname}",
        "Spec": {"Role": role, "Labels": labels or {}, "Availability": "active"},
        "Description": {
            "Hostname": hostname,
            "Platform": {"OS": "linux", "Architecture": arch},
            "Resources": {"NanoCPUs": int(cpus * 1e9), "MemoryBytes": int(memory_gib * GIB)},
            "Engine": {"Labels": engine_labels or {}},
        },
        "Status": {"State": "ready"},
    }


PI = node("pi-1", cpus=4, memory_gib=3.7, arch="aarch64", labels={"dask.worker": "true", "pool": "pi"})
SERVER = node("rack-1", cpus=32, memory_gib=128, role="manager", labels={"dask.worker": "true"})


@pytest.mark.parametrize(
    "text, matched",
    [
        ("node.labels.dask.worker==true", {"pi-1", "rack-1"}),
        ("node.labels.pool==pi", {"pi-1"}),
        ("node.labels.pool == PI", {"pi-1"}),  # Swarm ignores case and spaces
        ("node.labels.pool!=pi", {"rack-1"}),  # true of a node without the label
        ("node.role==manager", {"rack-1"}),
        ("node.platform.arch==aarch64", {"pi-1"}),
        ("node.platform.os==linux", {"pi-1", "rack-1"}),
        ("node.hostname!=pi-1", {"rack-1"}),
        ("node.id==id-rack-1", {"rack-1"}),
        ("engine.labels.ssd==yes", set()),
        ("node.newfeature==x", {"pi-1", "rack-1"}),  # unknown to us: left to Swarm
    ],
)
def test_constraints_match_as_swarm_matches_them(text, matched):
    constraint = Constraint.parse(text)
    assert {n["Description"]["Hostname"] for n in (PI, SERVER) if constraint.matches(n)} == matched


def test_a_constraint_without_an_operator_is_an_error():
    with pytest.raises(ValueError, match="not a Swarm placement constraint: 'node.labels.pool'"):
        Constraint.parse("node.labels.pool")


def test_a_task_some_node_could_run_has_no_reason():
    assert never_placed_reason([PI, SERVER], ["node.labels.dask.worker==true"], int(8e9), 16 * GIB) == ""


def test_no_node_with_the_labels_is_named_as_swarm_names_it():
    reason = never_placed_reason([PI, SERVER], ["node.labels.dask.worker==true", "node.labels.pool==gpu"], int(1e9), GIB)
    assert reason == (
        "no suitable node (scheduling constraints not satisfied on 2 nodes): "
        "no node has node.labels.dask.worker==true and node.labels.pool==gpu"
    )


def test_too_big_for_every_eligible_node_names_the_largest():
    reason = never_placed_reason([PI], ["node.labels.pool==pi"], int(8e9), 4 * GIB)
    assert reason == (
        "no suitable node (insufficient resources on 1 node): each reserves 8 cores and 4 GiB, "
        "and the node it may use has at most 4 cores and 3.7 GiB"
    )


def test_size_counts_only_the_nodes_the_constraints_allow():
    # The server is big enough but is not in the Pi pool.
    assert never_placed_reason([PI, SERVER], ["node.labels.pool==pi"], int(8e9), GIB).startswith(
        "no suitable node (insufficient resources on 1 node)"
    )


def test_a_node_that_is_down_still_counts():
    # Waiting may bring it back; Swarm says so when it cannot place the task.
    down = dict(PI, Status={"State": "down"}, Spec=dict(PI["Spec"], Availability="drain"))
    assert never_placed_reason([down], ["node.labels.pool==pi"], int(1e9), GIB) == ""
