"""What Swarm's tasks say about the scheduler or the worker a service runs.

Each scheduler and each worker is one service with one task (restart policy
none). While Swarm cannot place a task, the task stays pending and its
``Status.Err`` says why, e.g. "no suitable node (scheduling constraints not
satisfied on 3 nodes)". A task a node refused (image missing) ends
``rejected``, with the node's error.
"""

import dataclasses

# Task states after which a task will never run (restart policy is none).
TERMINAL_TASK_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})

# The terminal states of a task that died rather than finished. A clean exit
# ("complete") is how a retired worker or an idle scheduler ends: the
# scheduler's heartbeats tell the gateway about those.
DIED_TASK_STATES = TERMINAL_TASK_STATES - {"complete"}

# Desired states Swarm gives the tasks it is stopping. With restart policy
# none, Swarm gives a task of a node that went down or was drained one of
# these, and makes no new one; its reported state stays "running" while the
# node cannot say otherwise.
STOPPING_DESIRED_STATES = frozenset({"shutdown", "remove"})

# Pending for these reasons, a task waits for capacity that another cluster
# may free, and is given the start timeout. Any other reason (no node with the
# labels, no node of the platform) does not change by waiting.
CAPACITY_REASONS = ("insufficient resources", "host-mode port already in use")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a service's scheduler or worker may still run, and why not."""

    alive: bool
    #: why it failed, or (alive) what it waits for; "" when all is well
    reason: str = ""
    waiting_for_capacity: bool = False
    #: the node whose task Swarm stopped, when that is why it failed
    stopped_on_node: str = ""


SERVICE_REMOVED = Verdict(False, "its Swarm service was removed")


def is_capacity_reason(err):
    return any(reason in err for reason in CAPACITY_REASONS)


def unplaceable_error(task):
    """Swarm's reason for not placing ``task``, or "" if it is not stuck so."""
    status = task.get("Status", {})
    return status.get("Err", "") if status.get("State") == "pending" else ""


def judge(tasks, service_exists, stuck_for, unplaceable_timeout):
    """The verdict on one service from its tasks.

    ``stuck_for(task)`` gives the seconds a task has been seen pending with
    an error. A task Swarm cannot place fails after ``unplaceable_timeout``
    seconds, unless it only waits for capacity.
    """
    if not service_exists:
        return SERVICE_REMOVED
    live = [t for t in tasks if t["Status"]["State"] not in TERMINAL_TASK_STATES]
    if tasks and not live:
        return Verdict(False, ended(newest(tasks)))
    for task in live:
        err = unplaceable_error(task)
        if not err:
            continue
        if is_capacity_reason(err):
            return Verdict(True, err, waiting_for_capacity=True)
        if stuck_for(task) >= unplaceable_timeout:
            return Verdict(False, f"Swarm cannot place it: {err}")
    # No task yet: Swarm makes it moments after the service.
    return Verdict(True)


def judge_running(tasks, service_exists):
    """The verdict on the service of a running scheduler or worker.

    It is lost when its service is gone, when its task died, or when Swarm
    stops a task it still believes runs (its node is down or drained); the
    verdict then names that node's ID, for the caller to describe.
    """
    if not service_exists:
        return SERVICE_REMOVED
    if not tasks:
        return Verdict(True)
    task = newest(tasks)
    state = task["Status"]["State"]
    if state in DIED_TASK_STATES:
        return Verdict(False, ended(task))
    if state not in TERMINAL_TASK_STATES and task.get("DesiredState") in STOPPING_DESIRED_STATES:
        return Verdict(False, "Swarm stopped its task", stopped_on_node=task.get("NodeID", ""))
    return Verdict(True)


def newest(tasks):
    # UpdatedAt is RFC 3339 in UTC: as strings they sort by time.
    return max(tasks, key=lambda t: t.get("UpdatedAt", ""))


def ended(task):
    status = task["Status"]
    detail = status.get("Err") or status.get("Message") or "no error given"
    return f"its task ended {status['State']}: {detail}"
