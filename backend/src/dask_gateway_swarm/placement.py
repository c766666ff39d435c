"""Whether any node of the swarm could ever run a task, said in Swarm's words.

Swarm explains why it cannot place a task only once the task exists, and a
scale request creates none: upstream forwards it to the scheduler, which asks
for workers later. So a scale request is checked here, against the nodes'
labels, roles, platforms and total sizes: what waiting does not change.
Whether the nodes are up, and how much of them other tasks hold, can change,
and is left to Swarm (see ``tasks``).
"""

import dataclasses
import re

__all__ = ("Constraint", "never_placed_reason")

# Swarm's own syntax: <key>==<value> or <key>!=<value>, spaces allowed.
_CONSTRAINT = re.compile(r"^\s*([\w.\-/]+)\s*(==|!=)\s*(.*?)\s*$")


def _node_attribute(node, key):
    """The node's value for a constraint key; None when the node has no such
    label; ``Ellipsis`` for a key this module does not know."""
    lowered = key.lower()
    description = node.get("Description", {})
    if lowered.startswith("node.labels."):
        return node.get("Spec", {}).get("Labels", {}).get(key[len("node.labels."):])
    if lowered.startswith("engine.labels."):
        return description.get("Engine", {}).get("Labels", {}).get(key[len("engine.labels."):])
    return {
        "node.id": node.get("ID"),
        "node.hostname": description.get("Hostname"),
        "node.role": node.get("Spec", {}).get("Role"),
        "node.platform.os": description.get("Platform", {}).get("OS"),
        "node.platform.arch": description.get("Platform", {}).get("Architecture"),
    }.get(lowered, ...)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One placement constraint, matched as Swarm matches it: keys and values
    without regard to case, and ``!=`` true of a node without the label."""

    key: str
    equal: bool
    value: str

    @classmethod
    def parse(cls, text):
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"not a Swarm placement constraint: {text!r}")
        key, operator, value = match.groups()
        return cls(key, operator == "==", value)

    def matches(self, node):
        found = _node_attribute(node, self.key)
        if found is ...:
            # Not ours to judge: Swarm will.
            return True
        same = found is not None and found.lower() == self.value.lower()
        return same == self.equal


def _nodes(count):
    return f"{count} node" if count == 1 else f"{count} nodes"


def _bytes(value):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if value >= size:
            return f"{value / size:g} {unit}" if value % size == 0 else f"{value / size:.1f} {unit}"
    return f"{value} B"


def _cores(nano_cpus):
    return f"{nano_cpus / 1e9:g}"


def never_placed_reason(nodes, constraints, nano_cpus, memory_bytes):
    """Why no node of ``nodes`` (as ``docker node ls`` inspects them) could
    ever run a task with these constraints and reservations; "" if one could.

    The reason starts as Swarm's would for such a task.
    """
    parsed = [Constraint.parse(c) for c in constraints]
    eligible = [n for n in nodes if all(c.matches(n) for c in parsed)]
    if not eligible:
        return (
            f"no suitable node (scheduling constraints not satisfied on {_nodes(len(nodes))}): "
            f"no node has {' and '.join(constraints)}"
        )

    def size(node):
        resources = node.get("Description", {}).get("Resources", {})
        return resources.get("NanoCPUs", 0), resources.get("MemoryBytes", 0)

    sizes = [size(n) for n in eligible]
    if any(cpus >= nano_cpus and memory >= memory_bytes for cpus, memory in sizes):
        return ""
    most_cpus = max(cpus for cpus, _ in sizes)
    most_memory = max(memory for _, memory in sizes)
    return (
        f"no suitable node (insufficient resources on {_nodes(len(eligible))}): "
        f"each reserves {_cores(nano_cpus)} cores and {_bytes(memory_bytes)}, and the "
        f"{'node' if len(eligible) == 1 else 'nodes'} it may use "
        f"{'has' if len(eligible) == 1 else 'have'} at most {_cores(most_cpus)} cores "
        f"and {_bytes(most_memory)}"
    )
