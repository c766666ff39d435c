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
        return Verdict(False, "its Swarm service was removed")
    live = [t for t in tasks if t["Status"]["State"] not in TERMINAL_TASK_STATES]
    if tasks and not live:
        # UpdatedAt is RFC 3339 in UTC: as strings they sort by time.
        status = max(tasks, key=lambda t: t.get("UpdatedAt", ""))["Status"]
        detail = status.get("Err") or status.get("Message") or "no error given"
        return Verdict(False, f"its task ended {status['State']}: {detail}")
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
