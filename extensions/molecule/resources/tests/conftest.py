"""Shared fixtures of the Molecule verifier (pytest-testinfra).

Every scenario runs these tests (``verifier.directory`` in
extensions/molecule/config.yml). Nothing here knows a scenario: the nodes,
their groups and every expected value come from the scenario's Molecule
inventory (``--ansible-inventory``, passed by Molecule), read with
testinfra's Ansible runner, which also reaches each node with ``docker exec``
(the inventory's ``ansible_connection`` is community.docker.docker).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

MANAGERS = "swarm_managers"
WORKERS = "swarm_workers"
DEFAULT_ARCH_LABEL = "dask_swarm.arch"

# Molecule sets ANSIBLE_LOG_PATH for the whole scenario (config.yml): the
# converge and idempotence output is in that file. Take it out of the
# environment before any test runs, so that the Ansible commands testinfra
# itself runs (ansible-inventory, modules) do not write into the log under test.
ANSIBLE_LOG_PATH = os.environ.pop("ANSIBLE_LOG_PATH", "")


def _runner(config: pytest.Config) -> AnsibleRunner:
    inventory = config.getoption("ansible_inventory")
    if not inventory:
        raise pytest.UsageError("run through Molecule, or pass --ansible-inventory")
    return AnsibleRunner.get_runner(inventory)


def _swarm_hosts(runner: AnsibleRunner) -> list[str]:
    hosts = set(runner.get_hosts(MANAGERS)) | set(runner.get_hosts(WORKERS))
    return sorted(hosts)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``manager_name`` over the inventory's managers."""
    if "manager_name" in metafunc.fixturenames:
        managers = _runner(metafunc.config).get_hosts(MANAGERS)
        metafunc.parametrize("manager_name", managers, scope="session")


def str_labels(labels: dict[str, Any] | None) -> dict[str, str]:
    """Docker labels are strings; inventory values may be YAML scalars."""
    out = {}
    for key, value in (labels or {}).items():
        if isinstance(value, bool):
            value = str(value).lower()
        out[str(key)] = str(value)
    return out


@dataclass
class Node:
    """One inventory host: its variables, a testinfra host, its Swarm view."""

    name: str
    vars: dict[str, Any]
    host: Any = field(repr=False)

    @property
    def groups(self) -> list[str]:
        return self.vars.get("group_names", [])

    @property
    def is_manager(self) -> bool:
        return MANAGERS in self.groups

    @property
    def container(self) -> str:
        return self.vars.get("ansible_host", self.name)

    def docker_info(self, fmt: str) -> str:
        return self.host.check_output("docker info --format %s", fmt).strip()

    @cached_property
    def node_id(self) -> str:
        node_id = self.docker_info("{{.Swarm.NodeID}}")
        assert node_id, f"{self.name}: not part of a swarm (no Swarm.NodeID)"
        return node_id

    @cached_property
    def arch(self) -> str:
        # What Ansible reports as ansible_facts.architecture on Linux.
        return self.host.check_output("uname -m").strip()

    @property
    def expected_role(self) -> str:
        return "manager" if self.is_manager else "worker"

    @property
    def expected_availability(self) -> str:
        return self.vars.get("swarm_labels_availability", "active")

    @property
    def expected_labels(self) -> dict[str, str]:
        """derived | group | host, as the swarm_labels role contract says."""
        arch_label = self.vars.get("swarm_labels_arch_label", DEFAULT_ARCH_LABEL)
        labels = {arch_label: self.arch}
        labels.update(str_labels(self.vars.get("swarm_labels_group_labels")))
        labels.update(str_labels(self.vars.get("swarm_labels_host_labels")))
        for removed in self.vars.get("swarm_labels_remove", []) or []:
            labels.pop(removed, None)
        return labels


class Fleet:
    """All swarm nodes of the scenario, keyed by inventory name."""

    def __init__(self, runner: AnsibleRunner, inventory: str) -> None:
        self.nodes: dict[str, Node] = {}
        # The gateway runs on the first manager in inventory order.
        self.first_manager_name = runner.inventory[MANAGERS]["hosts"][0]
        for name in _swarm_hosts(runner):
            host = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
            self.nodes[name] = Node(name=name, vars=runner.get_variables(name), host=host)
        assert self.nodes, "the inventory has no swarm_managers/swarm_workers hosts"

    @property
    def first_manager(self) -> Node:
        return self.nodes[self.first_manager_name]

    @property
    def managers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_manager]

    @cached_property
    def by_node_id(self) -> dict[str, Node]:
        ids = {n.node_id: n for n in self.nodes.values()}
        assert len(ids) == len(self.nodes), (
            "two inventory hosts report the same Swarm NodeID: "
            + ", ".join(f"{n.name}={n.node_id}" for n in self.nodes.values())
        )
        return ids

    @cached_property
    def join_tokens(self) -> dict[str, str]:
        manager = self.managers[0]
        tokens = {
            kind: manager.host.check_output("docker swarm join-token -q %s", kind).strip()
            for kind in ("worker", "manager")
        }
        for kind, token in tokens.items():
            assert token.startswith("SWMTKN-"), f"unexpected {kind} join token format"
        return tokens

    def swarm_view(self, manager: Node) -> dict[str, dict[str, Any]]:
        """``docker node inspect`` of every node, as seen by ``manager``."""
        ids = manager.host.check_output("docker node ls -q").split()
        assert ids, f"{manager.name}: docker node ls lists no node"
        raw = manager.host.check_output("docker node inspect " + " ".join(shlex.quote(i) for i in ids))
        return {n["ID"]: n for n in json.loads(raw)}


@pytest.fixture(scope="session")
def fleet(pytestconfig: pytest.Config) -> Fleet:
    return Fleet(_runner(pytestconfig), pytestconfig.getoption("ansible_inventory"))


@pytest.fixture
def node(host, fleet: Fleet) -> Node:  # noqa: ANN001 - testinfra's host fixture
    """The fleet node behind testinfra's per-host ``host`` fixture."""
    return fleet.nodes[host.backend.host]


@pytest.fixture(scope="session")
def manager(manager_name: str, fleet: Fleet) -> Node:
    return fleet.nodes[manager_name]


@pytest.fixture(scope="session")
def platforms() -> dict[str, dict[str, Any]]:
    """The scenario's platforms (node name -> definition) from molecule.yml."""
    molecule_file = os.environ.get("MOLECULE_FILE", "")
    assert molecule_file and Path(molecule_file).is_file(), "MOLECULE_FILE is not set: run through Molecule"
    data = yaml.safe_load(Path(molecule_file).read_text(encoding="utf-8"))
    return {p["name"]: p for p in data.get("platforms", [])}


@pytest.fixture(scope="session")
def ansible_log() -> str:
    """The scenario's Ansible output (converge, idempotence, ...)."""
    assert ANSIBLE_LOG_PATH, "ANSIBLE_LOG_PATH is not set for the verifier (see extensions/molecule/config.yml)"
    path = Path(ANSIBLE_LOG_PATH)
    assert path.is_file(), f"no Ansible log at {path}"
    return path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def local():
    """The machine that runs the nodes (Molecule's controller)."""
    return testinfra.get_host("local://")
