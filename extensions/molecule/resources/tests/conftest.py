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
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

REPO = Path(__file__).resolve().parents[4]
# The backend tests' client helpers (clienthelpers.py), which the test
# modules and the gateway fixture use.
sys.path.insert(0, str(REPO / "backend" / "tests" / "integration"))
ROLES = REPO / "roles"
MANAGERS = "swarm_managers"
WORKERS = "swarm_workers"
DEFAULT_ARCH_LABEL = "dask_swarm.arch"
# Docker's names for the architectures Ansible (uname -m) reports.
DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# The emulated Raspberry Pis of the hetero scenario (its molecule.yml).
EMULATED_GROUP = "emulated_pis"
# What ../node.yml labels every node container with.
NODE_LABEL = "dask_swarm.gateway.fleet.node"
SCENARIO_LABEL = "dask_swarm.gateway.molecule"
RUN_LABEL = "dask_swarm.gateway.test-run"

# Molecule sets ANSIBLE_LOG_PATH for the whole scenario (config.yml): the
# converge and idempotence output is in that file. Take it out of the
# environment before any test runs, so that the Ansible commands testinfra
# itself runs (ansible-inventory, modules) do not write into the log under test.
ANSIBLE_LOG_PATH = os.environ.pop("ANSIBLE_LOG_PATH", "")


def pytest_configure(config: pytest.Config) -> None:
    """Trust the gateway's CA the way a user does, before any test module
    imports dask_gateway: aiohttp reads SSL_CERT_FILE at that import."""
    config.addinivalue_line("markers", "auth(mode): runs only on a fleet whose gateway_auth is mode")
    config.addinivalue_line(
        "markers", "fleet_var(name, value): runs only on a fleet whose first manager sets name (to value)"
    )
    config.addinivalue_line("markers", "fleet_group(name): runs only on a fleet whose inventory has hosts in group name")
    config.addinivalue_line(
        "markers", "swarm_workers(n): runs only on a fleet with at least n swarm workers that can run Dask workers"
    )
    config.addinivalue_line("markers", "changes_deployment: reruns a play; runs after every other test")
    config.addinivalue_line(
        "markers",
        "gateway_variant: reruns the gateway play with other settings; not on a fleet whose first manager "
        "sets harness_gateway_variants: false",
    )
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
    ca_file = Path(ephemeral, "gateway-ca.crt")
    if ephemeral and ca_file.is_file():
        os.environ["SSL_CERT_FILE"] = str(ca_file)


def _first_manager_vars(config: pytest.Config) -> dict[str, Any]:
    """The first manager's variables, as the inventory sets them (untemplated)."""
    runner = _runner(config)
    return runner.get_variables(runner.inventory[MANAGERS]["hosts"][0])


def gateway_auth(config: pytest.Config) -> str:
    """The first manager's gateway_auth (the role's default: simple)."""
    return str(_first_manager_vars(config).get("gateway_auth", "simple"))


def _applies(item: pytest.Item, mode: str, first: dict[str, Any], groups: dict[str, set[str]]) -> bool:
    auth = item.get_closest_marker("auth")
    if auth and auth.args[0] != mode:
        return False
    for marker in item.iter_markers("fleet_group"):
        if not groups.get(marker.args[0]):
            return False
    if item.get_closest_marker("gateway_variant") and first.get("harness_gateway_variants") is False:
        return False
    for marker in item.iter_markers("swarm_workers"):
        if len(groups.get(WORKERS, set()) - groups.get(EMULATED_GROUP, set())) < marker.args[0]:
            return False
    for marker in item.iter_markers("fleet_var"):
        name, *value = marker.args
        if not (first.get(name) == value[0] if value else first.get(name)):
            return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests for a fleet of another shape are deselected (reported as such),
    never skipped; tests that change the deployment go last."""
    mode, first = gateway_auth(config), _first_manager_vars(config)
    runner = _runner(config)
    groups = {group: set(runner.get_hosts(group)) for group in runner.inventory if group != "_meta"}
    keep, drop = [], []
    for item in items:
        (keep if _applies(item, mode, first, groups) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    keep.sort(key=lambda item: item.get_closest_marker("changes_deployment") is not None)
    items[:] = keep


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
        """The node's container: Ansible's address of it, unless Ansible
        reaches it over SSH (an emulated Pi), by its fleet label then."""
        if self.vars.get("ansible_connection") != "ssh":
            return self.vars.get("ansible_host", self.name)
        filters = [f"label={NODE_LABEL}={self.name}", f"label={SCENARIO_LABEL}={os.environ.get('MOLECULE_SCENARIO_NAME', '')}"]
        if os.environ.get("DASK_SWARM_TEST_RUN"):
            filters.append(f"label={RUN_LABEL}={os.environ['DASK_SWARM_TEST_RUN']}")
        names = subprocess.check_output(
            ["docker", "ps", "-a", "--format", "{{.Names}}"] + [a for f in filters for a in ("--filter", f)], text=True
        ).split()
        assert len(names) == 1, f"{self.name}: {len(names)} containers carry its fleet labels: {names}"
        return names[0]

    @property
    def emulated(self) -> bool:
        """An emulated arm64 node: it joins, pulls and runs containers, but
        qemu-user cannot run Swarm tasks on the overlay network there."""
        return EMULATED_GROUP in self.groups

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


@pytest.fixture(scope="module")
def worker_nodes(fleet: Fleet) -> set[str]:
    """Node IDs of the nodes the workers of a cluster with default options
    run on: labelled for workers, active, in gateway_default_node_pool (if
    the fleet sets one), and not emulated."""
    pool = fleet.first_manager.vars.get("gateway_default_node_pool", "any")
    pool_label = fleet.first_manager.vars.get("gateway_node_pool_label", "dask.pool")
    return {
        node.node_id
        for node in fleet.nodes.values()
        if node.expected_labels.get("dask.worker") == "true" and node.expected_availability == "active"
        and pool in ("any", node.expected_labels.get(pool_label))
        and not node.emulated
    }


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


# The gateway as the role deployed it, and every secret it made.


REGISTRY_DEFAULTS = yaml.safe_load((ROLES / "registry" / "defaults" / "main.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def gateway_vars(fleet: Fleet) -> dict[str, str]:
    """The gateway role's variables for the first manager: the inventory's,
    as Ansible templates them there, else the role's defaults."""
    manager = fleet.first_manager
    defaults = yaml.safe_load((ROLES / "gateway" / "defaults" / "main.yml").read_text(encoding="utf-8"))
    out = {}
    for var in ("gateway_public_url", "gateway_password_file", "gateway_state_dir", "gateway_stack_name",
                "gateway_user_password_dir"):
        if var in manager.vars:
            value = str(manager.host.ansible("ansible.builtin.debug", f"var={var}", check=False)[var])
        else:
            value = str(defaults[var])
        assert value and "{{" not in value and "<<" not in value, f"{var} of {manager.name}: {value!r}"
        out[var] = value
    for var in ("gateway_password_file", "gateway_user_password_dir"):
        out[var] = os.path.expanduser(out[var])
    return out


@pytest.fixture(scope="session")
def auth_mode(pytestconfig: pytest.Config) -> str:
    return gateway_auth(pytestconfig)


def read_password(path: Path) -> str:
    from testsecret import Secret

    value = path.read_text(encoding="utf-8").strip()
    assert len(value) >= 43, f"the generated password in {path} is shorter than 43 characters"
    return Secret(value)


@pytest.fixture(scope="session")
def user_password_files(gateway_vars: dict[str, str], fleet: Fleet) -> dict[str, Path]:
    """gateway_auth: users: each user's password file on the controller."""
    directory = Path(gateway_vars["gateway_user_password_dir"])
    return {user: directory / f"{user}.password" for user in fleet.first_manager.vars.get("gateway_users", [])}


@pytest.fixture(scope="session")
def password(gateway_vars: dict[str, str]) -> str:
    """The shared password (generated whatever the mode; the login of gateway_auth: simple)."""
    return read_password(Path(gateway_vars["gateway_password_file"]))


@pytest.fixture(scope="session")
def login(auth_mode: str, password: str, user_password_files: dict[str, Path]) -> tuple[str, str]:
    """A user name and password the gateway accepts."""
    if auth_mode == "users":
        user, path = next(iter(user_password_files.items()))
        return user, read_password(path)
    return "molecule-verifier", password


@pytest.fixture
def gateway(gateway_vars: dict[str, str], login: tuple[str, str]):
    """The stock client's Gateway, logged in; closed afterwards."""
    # Imported here, after pytest_configure has set SSL_CERT_FILE.
    from clienthelpers import close_gateway
    from dask_gateway import BasicAuth, Gateway

    gw = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(*login))
    yield gw
    close_gateway(gw)


@pytest.fixture(scope="module")
def fleet_image(fleet: Fleet, gateway_vars: dict[str, str]) -> str:
    """The image reference the gateway service runs."""
    return fleet.first_manager.host.check_output(
        "docker service inspect --format %s %s", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        f"{gateway_vars['gateway_stack_name']}_gateway",
    ).strip()


@pytest.fixture(scope="session")
def fleet_secrets(password: str, user_password_files: dict[str, Path], gateway_vars: dict[str, str], fleet: Fleet) -> dict[str, str]:
    """Every secret of the deployment, by what it is: none may ever be printed."""
    found = {"shared password": password}
    for user, path in user_password_files.items():
        found[f"{user}'s password"] = read_password(path)
    manager, state = fleet.first_manager, gateway_vars["gateway_state_dir"]
    for user in user_password_files:
        found[f"{user}'s hash"] = manager.host.check_output("cat %s", f"{state}/users/{user}.bcrypt").strip()
    found["metrics token"] = manager.host.check_output("cat %s", f"{state}/metrics_token").strip()
    registry_state = REGISTRY_DEFAULTS["registry_state_dir"]
    for what, directory in (("gateway", f"{state}/tls"), ("registry", f"{registry_state}/tls")):
        for key in ("ca.key", "tls.key"):
            if manager.host.file(f"{directory}/{key}").exists:
                pem = manager.host.check_output("cat %s", f"{directory}/{key}")
                # A line of the key's body: the PEM header alone is no secret.
                found[f"{what} {key}"] = sorted(pem.splitlines()[1:-1], key=len)[-1]
    for name in ("push.password", "htpasswd"):
        if manager.host.file(f"{registry_state}/{name}").exists:
            found[f"registry {name}"] = manager.host.check_output("cat %s", f"{registry_state}/{name}").strip()
    from testsecret import Secret

    return {what: Secret(value) for what, value in found.items()}


# Reruns of a play, as an admin would, by tests that change the deployment.


def playbook(pytestconfig, *extra: str, name: str = "gateway.yml", succeed: bool = True) -> subprocess.CompletedProcess:
    """Rerun a play of playbooks/ (the gateway's) on this fleet with extra variables, as an admin would."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", pytestconfig.getoption("ansible_inventory"),
         str(REPO / "playbooks" / name), "-v", *extra],
        cwd=REPO, env=dict(os.environ, ANSIBLE_NOCOLOR="1"), capture_output=True, text=True, timeout=900,
    )
    assert (proc.returncode == 0) == succeed, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def rerun_gateway(pytestconfig, fleet_image: str):
    """Rerun only the gateway's and the hub's plays with extra arguments, as an
    admin who changes a gateway setting would: ``--tags gateway --skip-tags
    image`` (README), which leaves out the registry and image plays; the
    gateway and the hub keep the image they run. Returns the run's process."""
    # A scenario's inventory may name the fleet registry through the
    # registry play's fact (gateway_allowed_image_prefixes in default): the
    # registry the running image comes from, as that play set it.
    skipped_facts = json.dumps({"registry_pull_address": fleet_image.split("/")[0]})

    def rerun(*extra: str, succeed: bool = True) -> subprocess.CompletedProcess:
        return playbook(pytestconfig, "--tags", "gateway", "--skip-tags", "image", "-e", skipped_facts, *extra,
                        succeed=succeed)

    return rerun


CLUSTER_LABEL = "dask-gateway-swarm.cluster"
ROLE_LABEL = "dask-gateway-swarm.role"


def worker_tasks(fleet: Fleet, cluster: str, current: bool = True) -> list[dict]:
    """State, error and node of the current task of each of the cluster's
    worker services (every task, whatever became of it, if not current)."""
    manager = fleet.first_manager.host
    services = manager.check_output(
        f"docker service ls -q --filter label={CLUSTER_LABEL}={cluster} --filter label={ROLE_LABEL}=worker"
    ).split()
    state_filter = "--filter desired-state=running" if current else ""
    tasks = []
    for service in services:
        ids = manager.check_output(f"docker service ps -q {state_filter} {service}").split()
        for task in json.loads(manager.check_output(f"docker inspect {' '.join(ids)}")) if ids else []:
            status = task["Status"]
            tasks.append({"state": status["State"], "err": status.get("Err", ""), "node": task.get("NodeID", "")})
    return tasks


# One host's line of a play recap (the log's lines may carry a timestamp first).
RECAP_LINE = re.compile(r"^(?:.*[ |])?(\S+) +: ok=(\d+) +changed=(\d+) +unreachable=(\d+) +failed=(\d+)", re.M)


def changed_by_host(output: str) -> dict[str, int]:
    """Each host's ``changed`` count in the last play recap of ``output``."""
    recap = output.rsplit("PLAY RECAP", 1)[-1]
    return {host: int(changed) for host, _, changed, _, _ in RECAP_LINE.findall(recap)}


def assert_no_secret_printed(run: subprocess.CompletedProcess, *secrets: str) -> None:
    output = run.stdout + run.stderr
    assert "PLAY RECAP" in output
    assert not [s for s in secrets if s in output], "the rerun printed a secret"


def gateway_log(fleet: Fleet, stack: str) -> str:
    """The gateway's log as an operator reads it: every task's, without the task prefix."""
    return fleet.first_manager.host.check_output(f"docker service logs --raw {stack}_gateway 2>&1")
