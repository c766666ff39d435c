"""The verdict on a service from its tasks, as Docker's API returns them."""

import pytest

from dask_gateway_swarm.tasks import judge, judge_running

NO_NODE = "no suitable node (scheduling constraints not satisfied on 1 node)"
NO_CORES = "no suitable node (insufficient resources on 1 node)"
NO_SLOT = "no suitable node (host-mode port already in use on 2 nodes)"


def task(state, err="", updated="2026-12-01T10:00:00.000000000Z", task_id="t1"):
    return {"ID": task_id, "UpdatedAt": updated, "Status": {"State": state, "Err": err, "Message": state}}


def verdict(tasks, exists=True, stuck=0.0, timeout=5.0):
    return judge(tasks, exists, lambda t: stuck, timeout)


def test_a_running_or_new_task_is_alive():
    assert verdict([task("running")]).alive
    assert verdict([task("preparing")]).alive
    # Swarm makes the task moments after the service.
    assert verdict([]).alive


def test_a_removed_service_has_failed():
    result = verdict([], exists=False)
    assert (result.alive, result.reason) == (False, "its Swarm service was removed")


def test_an_ended_task_fails_with_the_newest_error():
    older = task("failed", "task: non-zero exit (1)", updated="2026-12-01T10:00:00Z", task_id="a")
    newer = task("rejected", "No such image: dask:x", updated="2026-12-01T10:00:05Z", task_id="b")
    result = verdict([older, newer])
    assert (result.alive, result.reason) == (False, "its task ended rejected: No such image: dask:x")


def test_unplaceable_fails_only_after_the_timeout():
    assert verdict([task("pending", NO_NODE)], stuck=4.9).alive
    result = verdict([task("pending", NO_NODE)], stuck=5.0)
    assert (result.alive, result.reason) == (False, f"Swarm cannot place it: {NO_NODE}")


@pytest.mark.parametrize("err", [NO_CORES, NO_SLOT])
def test_waiting_for_capacity_is_alive_with_its_reason(err):
    result = verdict([task("pending", err)], stuck=600)
    assert (result.alive, result.waiting_for_capacity, result.reason) == (True, True, err)


def running(tasks, exists=True):
    return judge_running(tasks, exists)


def test_a_running_task_is_alive_and_a_clean_exit_is_left_to_the_heartbeats():
    assert running([task("running")]).alive
    assert running([]).alive
    # A retired worker, or a scheduler that shut itself down when idle.
    assert running([task("complete")]).alive


def test_a_running_object_whose_service_was_removed_is_lost():
    result = running([task("running")], exists=False)
    assert (result.alive, result.reason) == (False, "its Swarm service was removed")


@pytest.mark.parametrize("state", ["failed", "rejected", "shutdown", "orphaned"])
def test_a_running_object_whose_task_died_is_lost(state):
    result = running([task(state, "task: non-zero exit (137)")])
    assert (result.alive, result.reason) == (False, f"its task ended {state}: task: non-zero exit (137)")


def test_a_task_swarm_stops_on_a_lost_node_is_lost_and_names_the_node():
    # Swarm's view of a task on a node that went down: desired shutdown,
    # still reported running.
    lost = dict(task("running"), DesiredState="shutdown", NodeID="n1")
    result = running([lost])
    assert (result.alive, result.reason, result.stopped_on_node) == (False, "Swarm stopped its task", "n1")
    assert running([dict(task("running"), DesiredState="running", NodeID="n1")]).alive
