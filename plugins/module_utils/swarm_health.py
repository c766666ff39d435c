# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compare a swarm's nodes with the inventory: pure functions, no Docker.

Input is the list the Docker API returns for ``GET /nodes`` (``docker node
inspect``); output is a report of missing, down, drained, unexpected and
wrongly-roled nodes and of the managers' Raft quorum.

How an inventory entry finds its swarm node, in this order:

1. ``node_map[entry]`` when given (inventory host -> node ID) replaces the entry;
2. a node whose ID equals the entry;
3. nodes whose hostname equals the entry (case-insensitive); if several do,
   the entry is *ambiguous*, because hostnames repeat (every Raspberry Pi is
   ``raspberrypi``);
4. the same with the first label of a dotted name on either side
   (``mgr-01.lab.example`` finds a node called ``mgr-01`` and the reverse);
5. a node whose ID starts with the entry (at least 6 characters, one node).
"""

from __future__ import annotations

MIN_ID_PREFIX = 6
ID_SHOWN = 12


def summarize_node(raw):
    """The fields of one ``docker node inspect`` entry that the report uses."""
    spec = raw.get("Spec") or {}
    description = raw.get("Description") or {}
    status = raw.get("Status") or {}
    manager_status = raw.get("ManagerStatus") or {}
    role = spec.get("Role")
    return {
        "id": raw.get("ID"),
        "hostname": description.get("Hostname"),
        "role": role,
        "availability": spec.get("Availability"),
        "state": status.get("State"),
        "addr": status.get("Addr"),
        "reachability": manager_status.get("Reachability") if role == "manager" else None,
        "leader": bool(manager_status.get("Leader")),
        "labels": dict(spec.get("Labels") or {}),
        "engine_version": (description.get("Engine") or {}).get("EngineVersion"),
    }


def node_label(node):
    """``hostname (id prefix)`` for messages."""
    return "%s (%s)" % (node.get("hostname") or "?", (node.get("id") or "?")[:ID_SHOWN])


def _short(name):
    return name.split(".", 1)[0].lower()


def match_entry(entry, nodes, node_map=None):
    """Find the node an inventory entry names.

    Returns ``(node_ids, how)``: one ID when found, none when missing, several
    when ambiguous; ``how`` says which rule matched (or why none did).
    """
    node_map = node_map or {}
    target = entry
    if entry in node_map:
        target = node_map[entry]
        if not target:
            return [], "node_map gives no node ID"
        target = str(target)
    by_id = [n["id"] for n in nodes if n["id"] == target]
    if by_id:
        return by_id, "node_map" if target != entry else "id"
    wanted = target.lower()
    by_name = [n["id"] for n in nodes if (n.get("hostname") or "").lower() == wanted]
    if by_name:
        return by_name, "hostname"
    by_short = [n["id"] for n in nodes if n.get("hostname") and _short(n["hostname"]) == _short(target)]
    if by_short:
        return by_short, "short hostname"
    if len(target) >= MIN_ID_PREFIX:
        by_prefix = [n["id"] for n in nodes if (n["id"] or "").startswith(target)]
        if by_prefix:
            return by_prefix, "id prefix"
    return [], "no node has this ID or hostname"


def resolve_entries(entries, nodes, node_map=None):
    """Match every entry: ``(found {entry: id}, missing {entry: why}, ambiguous {entry: [ids]})``."""
    found, missing, ambiguous = {}, {}, {}
    for entry in entries:
        ids, how = match_entry(entry, nodes, node_map)
        if len(ids) == 1:
            found[entry] = ids[0]
        elif ids:
            ambiguous[entry] = sorted(ids)
        else:
            missing[entry] = how
    return found, missing, ambiguous


def manager_quorum(nodes):
    """Raft quorum of the managers: reachable managers against floor(n/2)+1."""
    managers = [n for n in nodes if n.get("role") == "manager"]
    total = len(managers)
    reachable = [n for n in managers if n.get("reachability") == "reachable"]
    needed = total // 2 + 1 if total else 1
    leader = [n for n in managers if n.get("leader")]
    return {
        "managers": total,
        "reachable": len(reachable),
        "needed": needed,
        "ok": total > 0 and len(reachable) >= needed,
        "fault_tolerance": (total - 1) // 2 if total else 0,
        "leader": node_label(leader[0]) if leader else None,
        "unreachable": [node_label(n) for n in managers if n.get("reachability") != "reachable"],
    }


def evaluate_swarm(raw_nodes, expected_managers=(), expected_workers=(), node_map=None, allow_drained=()):
    """Compare the swarm's nodes with the expected managers and workers.

    Returns a report dict; ``report["problems"]`` lists one message per
    problem and ``report["healthy"]`` is true when there is none.
    """
    nodes = [summarize_node(raw) for raw in raw_nodes]
    nodes.sort(key=lambda n: (n["role"] != "manager", (n["hostname"] or "").lower(), n["id"] or ""))
    by_id = dict((n["id"], n) for n in nodes)
    problems = []
    remarks = []
    expecting = bool(expected_managers or expected_workers)

    both = sorted(set(expected_managers) & set(expected_workers))
    for entry in both:
        problems.append("%s is listed both as a manager and as a worker" % entry)

    expected = {}  # node id -> (role, entry)
    missing, ambiguous, wrong_role, duplicates = [], [], [], []
    for role, entries in (("manager", expected_managers), ("worker", expected_workers)):
        found, lost, unclear = resolve_entries([e for e in entries if e not in both], nodes, node_map)
        for entry, why in sorted(lost.items()):
            missing.append({"entry": entry, "role": role, "reason": why})
            problems.append("missing %s %s: %s" % (role, entry, why))
        for entry, ids in sorted(unclear.items()):
            ambiguous.append({"entry": entry, "role": role, "nodes": ids})
            problems.append(
                "ambiguous %s %s: matches %d nodes (%s); name it by node ID or in node_map"
                % (role, entry, len(ids), ", ".join(node_label(by_id[i]) for i in ids))
            )
        for entry, node_id in sorted(found.items()):
            node = by_id[node_id]
            if node_id in expected:
                other_role, other = expected[node_id]
                duplicates.append({"entry": entry, "other": other, "node": node_id})
                problems.append("%s and %s both match %s" % (other, entry, node_label(node)))
                continue
            expected[node_id] = (role, entry)
            node["expected_as"] = role
            node["entry"] = entry
            if node["role"] != role:
                wrong_role.append({"entry": entry, "node": node_id, "role": node["role"], "expected": role})
                problems.append("%s %s is a %s, expected a %s" % (entry, node_label(node), node["role"], role))

    allowed_drained = set(resolve_entries(allow_drained, nodes, node_map)[0].values())

    down, drained, unexpected = [], [], []
    for node in nodes:
        node.setdefault("expected_as", None)
        node.setdefault("entry", None)
        name = "%s = %s" % (node["entry"], node_label(node)) if node["entry"] else node_label(node)
        is_unexpected = expecting and node["id"] not in expected
        if is_unexpected:
            unexpected.append(node["id"])
            hint = "; if it left the swarm, remove it with 'docker node rm'" if node["state"] != "ready" else ""
            problems.append(
                "unexpected %s %s (%s, %s)%s" % (node["role"], node_label(node), node["state"], node["availability"], hint)
            )
        if node["state"] != "ready":
            down.append(node["id"])
            if not is_unexpected:
                problems.append("down: %s is %s" % (name, node["state"]))
        if node["availability"] != "active":
            drained.append(node["id"])
            if node["id"] not in allowed_drained and not is_unexpected:
                problems.append("drained: %s has availability %s" % (name, node["availability"]))

    quorum = manager_quorum(nodes)
    if not quorum["ok"]:
        problems.append(
            "quorum: %d of %d managers reachable, %d needed" % (quorum["reachable"], quorum["managers"], quorum["needed"])
        )
    if quorum["managers"] and quorum["managers"] % 2 == 0:
        remarks.append(
            "%d managers tolerate %d failure%s, no more than %d would"
            % (
                quorum["managers"],
                quorum["fault_tolerance"],
                "" if quorum["fault_tolerance"] == 1 else "s",
                quorum["managers"] - 1,
            )
        )
    if not expecting:
        remarks.append("no expected_managers or expected_workers given: missing and unexpected nodes are not checked")

    return {
        "healthy": not problems,
        "problems": problems,
        "remarks": remarks,
        "nodes": nodes,
        "missing": missing,
        "ambiguous": ambiguous,
        "duplicates": duplicates,
        "wrong_role": wrong_role,
        "down": [node_label(by_id[i]) for i in down],
        "drained": [node_label(by_id[i]) for i in drained],
        "unexpected": [node_label(by_id[i]) for i in unexpected],
        "quorum": quorum,
    }


def no_leader_report(error):
    """The report when the manager cannot list nodes because Raft has no leader."""
    problem = "quorum: the swarm has no leader, managers cannot agree (%s)" % error
    return {
        "healthy": False,
        "problems": [problem],
        "remarks": [],
        "nodes": [],
        "missing": [],
        "ambiguous": [],
        "duplicates": [],
        "wrong_role": [],
        "down": [],
        "drained": [],
        "unexpected": [],
        "quorum": {
            "managers": None,
            "reachable": None,
            "needed": None,
            "ok": False,
            "fault_tolerance": None,
            "leader": None,
            "unreachable": [],
        },
    }


def is_no_leader_error(message):
    """Docker's answers when a manager has lost quorum."""
    text = str(message).lower()
    return "does not have a leader" in text or ("rpc error" in text and "context deadline exceeded" in text)
