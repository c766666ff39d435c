#!/usr/bin/python
# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: swarm_status
short_description: Compare a Docker Swarm's nodes with the inventory
version_added: 0.1.0
author: dask_swarm.gateway contributors (@dask_swarm)
description:
  - Lists the swarm's nodes through a manager's Docker daemon and compares them with the
    managers and workers the inventory expects.
  - Reports nodes that are missing, down, drained or paused, unexpected, or that have the
    wrong role, and the managers' Raft quorum (reachable managers against C(floor(n/2)+1)).
  - Fails when the swarm is unhealthy, unless O(report_only=true).
  - Changes nothing.
  - Must run on a swarm manager. On a node that is not one, or not in a swarm, it fails.
  - "How an inventory entry finds its node, in this order: O(node_map) turns an inventory host into
    a node ID; a node whose ID equals the entry; nodes whose host name equals it
    (case-insensitive); the same comparing only the first label of a dotted name
    (C(mgr-01.lab.example) and C(mgr-01)); a node whose ID starts with the entry (6 characters
    or more)."
  - Host names repeat (every Raspberry Pi is called C(raspberrypi)), so an entry whose host name
    matches several nodes is reported as ambiguous. Give node IDs, or build O(node_map) from
    M(community.docker.docker_host_info) (C(host_info.Swarm.NodeID)) run on every node, as the
    examples show. This is the ID C(dask_swarm.gateway.swarm_labels) labels nodes by.
options:
  expected_managers:
    description:
      - The nodes that must be managers. Inventory host names, swarm host names or node IDs.
    type: list
    elements: str
    default: []
  expected_workers:
    description:
      - The nodes that must be workers. Inventory host names, swarm host names or node IDs.
      - When O(expected_managers) or O(expected_workers) is given, every other node of the
        swarm is reported as unexpected. When neither is, only down, drained and quorum are
        checked.
    type: list
    elements: str
    default: []
  node_map:
    description:
      - Inventory host name to swarm node ID, for the entries of O(expected_managers),
        O(expected_workers) and O(allow_drained).
    type: dict
    default: {}
  allow_drained:
    description:
      - Nodes (named like the expected ones) that may have availability C(drain) or C(pause)
        without making the swarm unhealthy, for example a host out for maintenance or managers
        kept free of tasks. They are still listed in RV(drained).
    type: list
    elements: str
    default: []
  report_only:
    description:
      - Report the problems but do not fail when the swarm is unhealthy.
      - The module still fails when it cannot ask the daemon at all.
    type: bool
    default: false
  docker_host:
    description:
      - The Docker daemon to ask, for example V(unix:///var/run/docker.sock) or V(tcp://192.0.2.11:2376).
      - Read from E(DOCKER_HOST) when not given.
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_url]
  tls:
    description: Connect with TLS without verifying the daemon's certificate. E(DOCKER_TLS).
    type: bool
    default: false
  validate_certs:
    description: Connect with TLS and verify the daemon's certificate. E(DOCKER_TLS_VERIFY).
    type: bool
    default: false
    aliases: [tls_verify]
  ca_path:
    description: CA certificate that signed the daemon's certificate.
    type: path
    aliases: [ca_cert, tls_ca_cert, cacert_path]
  client_cert:
    description: Client certificate for TLS.
    type: path
    aliases: [tls_client_cert, cert_path]
  client_key:
    description: Key of the client certificate.
    type: path
    aliases: [tls_client_key, key_path]
  timeout:
    description: Seconds to wait for the daemon's answer. E(DOCKER_TIMEOUT).
    type: int
    default: 60
attributes:
  check_mode:
    description: Can run in check mode and return the changed status without changing anything.
    support: full
    details: The module changes nothing, so it runs the same in check mode.
  diff_mode:
    description: Can return a diff of what would change.
    support: none
requirements:
  - Docker SDK for Python (C(docker)) on the manager it runs on.
notes:
  - The connection options have the names and environment variables of community.docker's modules.
  - When the managers have lost quorum the daemon cannot list nodes; the module then reports
    C(quorum.ok=false) with the daemon's message instead of the node lists.
seealso:
  - module: community.docker.docker_node_info
  - module: community.docker.docker_host_info
  - module: dask_swarm.gateway.gateway_check
"""

EXAMPLES = r"""
- name: Read each node's swarm node ID
  community.docker.docker_host_info:
  register: __host_info

- name: Compare the swarm with the inventory, addressing nodes by node ID
  dask_swarm.gateway.swarm_status:
    expected_managers: "{{ groups['swarm_managers'] }}"
    expected_workers: "{{ groups['swarm_workers'] }}"
    node_map: >-
      {{ dict(ansible_play_hosts
              | zip(ansible_play_hosts | map('extract', hostvars, ['__host_info', 'host_info', 'Swarm', 'NodeID']))) }}
  delegate_to: "{{ groups['swarm_managers'][0] }}"
  run_once: true
  register: swarm_status

- name: Only report, with node IDs written in the inventory
  dask_swarm.gateway.swarm_status:
    expected_managers: [pqjgzetveu3xrhw8nl2b8xauk]
    expected_workers: [x3c9v0b1n2m4a5s6d7f8g9h0j, k1l2z3x4c5v6b7n8m9q0w1e2r]
    allow_drained: [x3c9v0b1n2m4a5s6d7f8g9h0j]
    report_only: true
  register: swarm_status

- name: Show the problems
  ansible.builtin.debug:
    var: swarm_status.problems
"""

RETURN = r"""
healthy:
  description: Whether the swarm has no problem.
  returned: always
  type: bool
problems:
  description: One message per problem found.
  returned: always
  type: list
  elements: str
  sample: ["down: node-02.lab.example = node-02 (x3c9v0b1n2m4) is down", "quorum: 1 of 3 managers reachable, 2 needed"]
remarks:
  description:
    - Observations that do not make the swarm unhealthy, such as an even number of managers.
    - The module also shows them as warnings.
  returned: always
  type: list
  elements: str
nodes:
  description: Every node of the swarm.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Node ID.
      type: str
    hostname:
      description: Host name the node reported when it joined.
      type: str
    role:
      description: V(manager) or V(worker).
      type: str
    availability:
      description: V(active), V(pause) or V(drain).
      type: str
    state:
      description: V(ready), V(down), V(unknown) or V(disconnected).
      type: str
    addr:
      description: Address the node is reached at.
      type: str
    reachability:
      description: For managers V(reachable), V(unreachable) or V(unknown); null for workers.
      type: str
    leader:
      description: Whether the node is the Raft leader.
      type: bool
    labels:
      description: Node labels.
      type: dict
    engine_version:
      description: Docker Engine version.
      type: str
    expected_as:
      description: The role the inventory expects; null for an unexpected node.
      type: str
    entry:
      description: The inventory entry that matched the node.
      type: str
missing:
  description: Expected entries that match no node, with the role expected and the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"entry": "pi-04", "role": "worker", "reason": "no node has this ID or hostname"}]
ambiguous:
  description: Entries whose host name matches several nodes.
  returned: always
  type: list
  elements: dict
duplicates:
  description: Entries that match a node another entry already matched.
  returned: always
  type: list
  elements: dict
wrong_role:
  description: Expected nodes whose role differs from the expected one.
  returned: always
  type: list
  elements: dict
down:
  description: Nodes (expected or not) whose state is not C(ready), as C(hostname (ID prefix)).
  returned: always
  type: list
  elements: str
drained:
  description: Nodes whose availability is not C(active), including the allowed ones.
  returned: always
  type: list
  elements: str
unexpected:
  description: Nodes the inventory does not name (only when expected nodes are given).
  returned: always
  type: list
  elements: str
quorum:
  description: The managers' Raft quorum.
  returned: always
  type: dict
  contains:
    managers:
      description: Number of managers.
      type: int
    reachable:
      description: Number of reachable managers.
      type: int
    needed:
      description: Managers needed for quorum, C(floor(managers/2)+1).
      type: int
    ok:
      description: Whether enough managers are reachable.
      type: bool
    fault_tolerance:
      description: How many managers may fail without losing quorum.
      type: int
    leader:
      description: The leader as C(hostname (ID prefix)).
      type: str
    unreachable:
      description: Managers that are not reachable.
      type: list
      elements: str
  sample: {"managers": 3, "reachable": 3, "needed": 2, "ok": true, "fault_tolerance": 1, "leader": "mgr-01 (pqjgzetveu3x)", "unreachable": []}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dask_swarm.gateway.plugins.module_utils.docker_client import (
    DOCKER_IMPORT_ERROR,
    HAS_DOCKER,
    APIError,
    DockerException,
    docker_argument_spec,
    get_docker_client,
)
from ansible_collections.dask_swarm.gateway.plugins.module_utils.swarm_health import (
    evaluate_swarm,
    is_no_leader_error,
    no_leader_report,
)

try:
    from requests.exceptions import RequestException
except ImportError:  # pragma: no cover - the Docker SDK depends on requests
    RequestException = DockerException


def argument_spec():
    spec = dict(
        expected_managers=dict(type="list", elements="str", default=[]),
        expected_workers=dict(type="list", elements="str", default=[]),
        node_map=dict(type="dict", default={}),
        allow_drained=dict(type="list", elements="str", default=[]),
        report_only=dict(type="bool", default=False),
    )
    spec.update(docker_argument_spec())
    return spec


def read_nodes(module, client):
    """Return the raw node list, or a report when quorum is lost."""
    try:
        swarm = (client.info() or {}).get("Swarm") or {}
    except (DockerException, RequestException) as exc:
        module.fail_json(msg="cannot ask the Docker daemon at %s: %s" % (module.params["docker_host"], exc))
    state = swarm.get("LocalNodeState")
    if state != "active":
        module.fail_json(msg="this Docker daemon is not an active swarm node (LocalNodeState %s)" % state)
    if not swarm.get("ControlAvailable"):
        module.fail_json(
            msg="this node (%s) is a swarm worker; run swarm_status on a manager" % swarm.get("NodeID"),
        )
    try:
        return client.nodes(), None
    except APIError as exc:
        if is_no_leader_error(exc.explanation or exc):
            return None, no_leader_report(exc.explanation or str(exc))
        module.fail_json(msg="cannot list the swarm's nodes: %s" % exc, exception=traceback.format_exc())
    except (DockerException, RequestException) as exc:
        module.fail_json(msg="cannot list the swarm's nodes: %s" % exc, exception=traceback.format_exc())


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"), exception=DOCKER_IMPORT_ERROR)
    params = module.params

    client = get_docker_client(module)
    try:
        raw_nodes, report = read_nodes(module, client)
    finally:
        client.close()
    if report is None:
        report = evaluate_swarm(
            raw_nodes,
            expected_managers=params["expected_managers"],
            expected_workers=params["expected_workers"],
            node_map=params["node_map"],
            allow_drained=params["allow_drained"],
        )

    for remark in report["remarks"]:
        module.warn(remark)
    if report["healthy"] or params["report_only"]:
        module.exit_json(changed=False, **report)
    module.fail_json(msg="the swarm is unhealthy: %s" % "; ".join(report["problems"]), changed=False, **report)


if __name__ == "__main__":
    main()
