"""Pure comparison of a swarm's nodes with the inventory (no Docker)."""

import pytest

from ansible_collections.dask_swarm.gateway.plugins.module_utils.swarm_health import (
    evaluate_swarm,
    is_no_leader_error,
    manager_quorum,
    match_entry,
    no_leader_report,
    summarize_node,
)


def node(node_id, hostname, role="worker", state="ready", availability="active", reachability="reachable", leader=False):
    """A ``docker node inspect`` entry with the fields the report reads."""
    raw = {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": availability, "Labels": {"dask.worker": "true"}},
        "Description": {"Hostname": hostname, "Engine": {"EngineVersion": "26.1.5"}},
        "Status": {"State": state, "Addr": "192.0.2.1"},
    }
    if role == "manager":
        raw["ManagerStatus"] = {"Reachability": reachability, "Leader": leader, "Addr": "192.0.2.1:2377"}
    return raw


M1 = node("m1aaaaaaaaaaaaaaaaaaaaaaa", "mgr-01", "manager", leader=True)
M2 = node("m2bbbbbbbbbbbbbbbbbbbbbbb", "mgr-02", "manager")
M3 = node("m3ccccccccccccccccccccccc", "mgr-03", "manager")
W1 = node("w1ddddddddddddddddddddddd", "node-01")
W2 = node("w2eeeeeeeeeeeeeeeeeeeeeee", "node-02")
HEALTHY = [M1, M2, M3, W1, W2]
MANAGERS = ["mgr-01", "mgr-02", "mgr-03"]
WORKERS = ["node-01", "node-02"]


def test_summary_of_a_manager_and_a_worker():
    m = summarize_node(M1)
    assert m["role"] == "manager" and m["leader"] is True and m["reachability"] == "reachable"
    w = summarize_node(W1)
    assert w["reachability"] is None and w["leader"] is False
    assert w["labels"] == {"dask.worker": "true"} and w["engine_version"] == "26.1.5"


def test_summary_survives_missing_fields():
    s = summarize_node({"ID": "x"})
    assert s["id"] == "x" and s["hostname"] is None and s["labels"] == {}


def test_healthy_swarm():
    report = evaluate_swarm(HEALTHY, MANAGERS, WORKERS)
    assert report["healthy"] is True
    assert report["problems"] == []
    assert report["quorum"] == {
        "managers": 3,
        "reachable": 3,
        "needed": 2,
        "ok": True,
        "fault_tolerance": 1,
        "leader": "mgr-01 (m1aaaaaaaaaa)",
        "unreachable": [],
    }
    assert {n["entry"] for n in report["nodes"]} == set(MANAGERS + WORKERS)
    # managers first
    assert [n["role"] for n in report["nodes"]] == ["manager"] * 3 + ["worker"] * 2


def test_missing_worker():
    report = evaluate_swarm([M1, M2, M3, W1], MANAGERS, WORKERS)
    assert not report["healthy"]
    assert report["missing"] == [{"entry": "node-02", "role": "worker", "reason": "no node has this ID or hostname"}]
    assert report["problems"] == ["missing worker node-02: no node has this ID or hostname"]


def test_down_worker_is_reported_with_its_entry():
    down = node("w2eeeeeeeeeeeeeeeeeeeeeee", "node-02", state="down")
    report = evaluate_swarm([M1, M2, M3, W1, down], MANAGERS, WORKERS)
    assert report["down"] == ["node-02 (w2eeeeeeeeee)"]
    assert report["problems"] == ["down: node-02 = node-02 (w2eeeeeeeeee) is down"]


def test_drained_worker_fails_unless_allowed():
    drained = node("w2eeeeeeeeeeeeeeeeeeeeeee", "node-02", availability="drain")
    report = evaluate_swarm([M1, M2, M3, W1, drained], MANAGERS, WORKERS)
    assert report["problems"] == ["drained: node-02 = node-02 (w2eeeeeeeeee) has availability drain"]
    allowed = evaluate_swarm([M1, M2, M3, W1, drained], MANAGERS, WORKERS, allow_drained=["node-02"])
    assert allowed["healthy"] is True
    assert allowed["drained"] == ["node-02 (w2eeeeeeeeee)"]


def test_paused_counts_as_drained():
    paused = node("w2eeeeeeeeeeeeeeeeeeeeeee", "node-02", availability="pause")
    report = evaluate_swarm([M1, M2, M3, W1, paused], MANAGERS, WORKERS)
    assert report["drained"] == ["node-02 (w2eeeeeeeeee)"]
    assert "availability pause" in report["problems"][0]


def test_unexpected_node_and_stale_down_node():
    extra = node("x9fffffffffffffffffffffff", "stranger")
    stale = node("s8ggggggggggggggggggggggg", "old-pi", state="down")
    report = evaluate_swarm(HEALTHY + [extra, stale], MANAGERS, WORKERS)
    assert sorted(report["unexpected"]) == ["old-pi (s8gggggggggg)", "stranger (x9ffffffffff)"]
    assert "unexpected worker stranger (x9ffffffffff) (ready, active)" in report["problems"]
    stale_msg = [p for p in report["problems"] if "old-pi" in p]
    assert len(stale_msg) == 1 and "docker node rm" in stale_msg[0]
    assert report["down"] == ["old-pi (s8gggggggggg)"]


def test_nothing_is_unexpected_without_expectations():
    report = evaluate_swarm(HEALTHY)
    assert report["healthy"] is True
    assert report["unexpected"] == []
    assert any("no expected_managers" in r for r in report["remarks"])


def test_wrong_role():
    report = evaluate_swarm(HEALTHY, ["mgr-01", "mgr-02", "node-01"], ["mgr-03", "node-02"])
    assert {(w["entry"], w["role"], w["expected"]) for w in report["wrong_role"]} == {
        ("node-01", "worker", "manager"),
        ("mgr-03", "manager", "worker"),
    }
    assert "node-01 node-01 (w1dddddddddd) is a worker, expected a manager" in report["problems"]


def test_entry_in_both_lists_is_a_problem():
    report = evaluate_swarm(HEALTHY, MANAGERS, WORKERS + ["mgr-01"])
    assert "mgr-01 is listed both as a manager and as a worker" in report["problems"]


@pytest.mark.parametrize(
    "reachability, ok, reachable",
    [
        (("reachable", "reachable", "reachable"), True, 3),
        (("reachable", "reachable", "unreachable"), True, 2),
        (("reachable", "unreachable", "unreachable"), False, 1),
    ],
)
def test_quorum_of_three(reachability, ok, reachable):
    managers = [
        summarize_node(node("m%d" % i + "x" * 23, "mgr-%d" % i, "manager", reachability=r)) for i, r in enumerate(reachability)
    ]
    q = manager_quorum(managers)
    assert (q["ok"], q["reachable"], q["needed"]) == (ok, reachable, 2)


@pytest.mark.parametrize("count, needed, tolerance", [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (7, 4, 3)])
def test_quorum_needs_floor_half_plus_one(count, needed, tolerance):
    managers = [summarize_node(node("m%d" % i + "x" * 23, "mgr-%d" % i, "manager")) for i in range(count)]
    q = manager_quorum(managers)
    assert (q["needed"], q["fault_tolerance"], q["ok"]) == (needed, tolerance, True)


def test_two_of_four_managers_is_no_quorum():
    m2 = node("m2bbbbbbbbbbbbbbbbbbbbbbb", "mgr-02", "manager", state="down", reachability="unreachable")
    m4 = node("m4hhhhhhhhhhhhhhhhhhhhhhh", "mgr-04", "manager", state="down", reachability="unreachable")
    report = evaluate_swarm([M1, m2, M3, m4, W1], MANAGERS + ["mgr-04"], ["node-01"])
    assert report["quorum"]["ok"] is False
    assert "quorum: 2 of 4 managers reachable, 3 needed" in report["problems"]
    assert report["quorum"]["unreachable"] == ["mgr-02 (m2bbbbbbbbbb)", "mgr-04 (m4hhhhhhhhhh)"]
    assert any(r.startswith("4 managers tolerate 1 failure") for r in report["remarks"])


# Raspberry Pis all call themselves raspberrypi.
PI_M = node("p1aaaaaaaaaaaaaaaaaaaaaaa", "raspberrypi", "manager", leader=True)
PI_2 = node("p2bbbbbbbbbbbbbbbbbbbbbbb", "raspberrypi")
PI_3 = node("p3ccccccccccccccccccccccc", "raspberrypi")
PIS = [PI_M, PI_2, PI_3]


def test_repeated_hostnames_are_ambiguous():
    report = evaluate_swarm(PIS, ["pi-01"], ["raspberrypi"])
    assert not report["healthy"]
    assert report["ambiguous"][0]["entry"] == "raspberrypi"
    assert report["ambiguous"][0]["nodes"] == ["p1aaaaaaaaaaaaaaaaaaaaaaa", "p2bbbbbbbbbbbbbbbbbbbbbbb", "p3ccccccccccccccccccccccc"]
    assert any("name it by node ID or in node_map" in p for p in report["problems"])


def test_node_map_resolves_repeated_hostnames():
    node_map = {"pi-01": PI_M["ID"], "pi-02": PI_2["ID"], "pi-03": PI_3["ID"]}
    report = evaluate_swarm(PIS, ["pi-01"], ["pi-02", "pi-03"], node_map=node_map)
    assert report["healthy"] is True, report["problems"]
    assert [n["entry"] for n in report["nodes"]] == ["pi-01", "pi-02", "pi-03"]


def test_node_ids_work_without_a_map():
    report = evaluate_swarm(PIS, [PI_M["ID"]], [PI_2["ID"], PI_3["ID"]])
    assert report["healthy"] is True


def test_node_map_entry_without_id_is_missing():
    report = evaluate_swarm(PIS, ["pi-01"], ["pi-02"], node_map={"pi-01": PI_M["ID"], "pi-02": ""})
    assert {"entry": "pi-02", "role": "worker", "reason": "node_map gives no node ID"} in report["missing"]


def test_node_map_to_a_removed_node_is_missing():
    report = evaluate_swarm(PIS[:2], ["pi-01"], ["pi-03"], node_map={"pi-01": PI_M["ID"], "pi-03": PI_3["ID"]})
    assert [m["entry"] for m in report["missing"]] == ["pi-03"]


def test_two_entries_for_one_node():
    report = evaluate_swarm(PIS, [PI_M["ID"]], [PI_2["ID"], "p2bbbbbb"], node_map={})
    assert report["duplicates"] and "both match raspberrypi (p2bbbbbbbbbb)" in " ".join(report["problems"])


@pytest.mark.parametrize(
    "entry, expected, how",
    [
        ("m1aaaaaaaaaaaaaaaaaaaaaaa", ["m1aaaaaaaaaaaaaaaaaaaaaaa"], "id"),
        ("MGR-01", ["m1aaaaaaaaaaaaaaaaaaaaaaa"], "hostname"),
        ("mgr-01.lab.example", ["m1aaaaaaaaaaaaaaaaaaaaaaa"], "short hostname"),
        ("m2bbbb", ["m2bbbbbbbbbbbbbbbbbbbbbbb"], "id prefix"),
        ("m2bbb", [], "no node has this ID or hostname"),  # prefix too short
        ("nowhere", [], "no node has this ID or hostname"),
    ],
)
def test_match_rules(entry, expected, how):
    nodes = [summarize_node(n) for n in HEALTHY]
    assert match_entry(entry, nodes) == (expected, how)


def test_fqdn_hostname_matches_short_inventory_name():
    nodes = [summarize_node(node("f1" + "a" * 23, "node-07.lab.example"))]
    assert match_entry("node-07", nodes) == (["f1" + "a" * 23], "short hostname")


def test_no_leader_report():
    assert is_no_leader_error("rpc error: code = Unknown desc = The swarm does not have a leader.")
    assert not is_no_leader_error("This node is not a swarm manager.")
    report = no_leader_report("The swarm does not have a leader")
    assert report["healthy"] is False and report["quorum"]["ok"] is False
    assert report["problems"][0].startswith("quorum: the swarm has no leader")
