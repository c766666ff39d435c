"""What a converged fleet must look like, checked node by node.

Shared by every scenario; expected values come from the scenario's inventory
(see conftest.py). Swarm nodes are matched to inventory hosts by NodeID, which
each node reports itself: hostnames may repeat (every Pi is `raspberrypi`).
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import Fleet, Node, changed_by_host, playbook

BOOT_MARKER = "/run/dask-swarm-harness.boot"
CGROUP_FLAGS = ("cgroup_enable=memory", "cgroup_memory=1")
PI_CMDLINE_CANDIDATES = ("/boot/firmware/cmdline.txt", "/boot/cmdline.txt")


# --- Docker Engine, installed by roles/docker_engine --------------------------


def test_docker_package_installed(node: Node) -> None:
    if node.vars.get("docker_engine_source", "distro") != "docker_ce":
        assert node.host.package("docker.io").is_installed
        return
    for package in ("docker-ce", "docker-ce-cli", "containerd.io"):
        assert node.host.package(package).is_installed, f"{package} is not installed"
    url = node.vars["docker_engine_docker_ce_url"]
    sources = node.host.file("/etc/apt/sources.list.d/docker.sources").content_string
    # Docker's layout: <url>/<distro> <codename> stable, for this architecture.
    assert f"URIs: {url}/debian" in sources and "Suites: bookworm" in sources, sources
    assert "Components: stable" in sources and "Architectures: amd64" in sources, sources
    policy = node.host.check_output("apt-cache policy docker-ce")
    # apt prints file:///srv/x as file:/srv/x.
    assert f"{url.split('://', 1)[-1]}/debian bookworm/stable amd64 Packages" in policy, policy


def test_node_image_has_no_docker(node: Node, local) -> None:  # noqa: ANN001
    """The role, not the node image, must have installed Docker; except on an
    emulated Pi, whose image has it (with its native runc, shim and iptables,
    ../node-arm64/Dockerfile), which package runs must have kept."""
    if node.emulated:
        diversions = node.host.check_output("dpkg-divert --list")
        for path in ("/usr/sbin/runc", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/xtables-legacy-multi"):
            assert f"local diversion of {path} to {path}.aarch64" in diversions, diversions
        assert node.host.check_output("readlink -f /usr/bin/containerd-shim-runc-v2") == (
            "/usr/local/lib/native/containerd-shim-runc-v2")
        return
    image = local.check_output("docker inspect --format %s %s", "{{.Config.Image}}", node.container).strip()
    # dpkg-query -W exits 0 for a package dpkg knows and 1 for one it has never
    # heard of; anything else (docker run's 125, 126, 127) means the probe did
    # not run, which must fail the test rather than pass it on an empty stdout.
    probe = local.run(
        "docker run --rm --network none --entrypoint dpkg-query %s -W -f %s docker.io",
        image,
        "${Status}",
    )
    assert probe.rc in (0, 1), f"dpkg-query did not run in {image} (rc={probe.rc}): {probe.stderr}"
    if probe.rc == 1:
        assert "no packages found matching docker.io" in probe.stderr, (
            f"dpkg-query failed in {image} for another reason: {probe.stderr}"
        )
    else:
        # Known to dpkg, e.g. removed with its configuration files kept.
        assert "install ok installed" not in probe.stdout, f"image {image} already contains docker.io"


def test_docker_service_running_and_enabled(node: Node) -> None:
    service = node.host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_json(node: Node) -> None:
    daemon_json = node.host.file("/etc/docker/daemon.json")
    assert daemon_json.is_file
    config = json.loads(daemon_json.content_string)
    log_opts = config.get("log-opts", {})
    assert log_opts.get("max-size"), "daemon.json: no log-opts max-size (log rotation)"
    assert str(log_opts.get("max-file", "")).strip(), "daemon.json: no log-opts max-file (log rotation)"
    # live-restore is incompatible with Swarm mode.
    assert not config.get("live-restore", False), "daemon.json enables live-restore"
    assert node.docker_info("{{json .LiveRestoreEnabled}}") == "false"


def test_an_existing_engine_is_adopted_as_it_is(node: Node, ansible_log: str) -> None:
    """An engine the role did not install keeps its admin's daemon.json; one it installed is marked."""
    admin_config = node.vars.get("harness_preinstalled_daemon_json")
    daemon_json = json.loads(node.host.file("/etc/docker/daemon.json").content_string)
    marker = node.host.file("/etc/docker/.dask_swarm_gateway")
    if admin_config is None:
        assert marker.exists, "the role installed this engine but left no marker"
        assert "labels" not in daemon_json
        return
    assert daemon_json == admin_config, "the role changed the daemon.json of an adopted engine"
    assert not marker.exists, "the role marked an engine it did not install"
    assert "lab.installed-by=admin" in node.docker_info("{{json .Labels}}")
    assert f"is already running on {node.name} and was not installed by this role" in " ".join(ansible_log.split())


# --- Swarm membership, as each node sees itself --------------------------------


def test_swarm_active(node: Node) -> None:
    assert node.docker_info("{{.Swarm.LocalNodeState}}") == "active"
    control = node.docker_info("{{json .Swarm.ControlAvailable}}")
    assert control == json.dumps(node.is_manager), f"{node.name}: ControlAvailable={control}"


def test_advertise_addr(node: Node) -> None:
    """Each node advertises its own address (default: its default IPv4)."""
    var = "swarm_manager_advertise_addr" if node.is_manager else "swarm_worker_advertise_addr"
    expected = node.vars.get(var, "")
    if not expected or "{{" in str(expected):
        route = node.host.check_output("ip -4 -o route get 8.8.8.8")
        match = re.search(r"\bsrc (\S+)", route)
        assert match, f"{node.name}: no default IPv4 route: {route}"
        expected = match.group(1)
    assert node.docker_info("{{.Swarm.NodeAddr}}") == expected


# --- The swarm as every manager sees it ----------------------------------------


def test_swarm_has_exactly_the_inventory_nodes(manager: Node, fleet: Fleet) -> None:
    view = fleet.swarm_view(manager)
    assert len(view) == len(fleet.nodes)
    assert set(view) == set(fleet.by_node_id)
    for node_id, swarm_node in view.items():
        name = fleet.by_node_id[node_id].name
        assert swarm_node["Status"]["State"] == "ready", f"{name} is {swarm_node['Status']['State']}"


def test_roles_and_manager_status(manager: Node, fleet: Fleet) -> None:
    view = fleet.swarm_view(manager)
    leaders = []
    for node_id, node in fleet.by_node_id.items():
        swarm_node = view[node_id]
        assert swarm_node["Spec"]["Role"] == node.expected_role, node.name
        status = swarm_node.get("ManagerStatus")
        if node.is_manager:
            assert status, f"{node.name}: manager without ManagerStatus"
            assert status.get("Reachability") == "reachable", f"{node.name}: {status}"
            if status.get("Leader"):
                leaders.append(node.name)
        else:
            assert not status, f"{node.name}: worker with ManagerStatus {status}"
    assert len(leaders) == 1, f"leaders: {leaders}"


def test_labels(manager: Node, fleet: Fleet) -> None:
    view = fleet.swarm_view(manager)
    for node_id, node in fleet.by_node_id.items():
        labels = view[node_id]["Spec"].get("Labels") or {}
        assert labels == node.expected_labels, node.name


def test_availability(manager: Node, fleet: Fleet) -> None:
    view = fleet.swarm_view(manager)
    for node_id, node in fleet.by_node_id.items():
        assert view[node_id]["Spec"]["Availability"] == node.expected_availability, node.name


def test_hostnames(manager: Node, fleet: Fleet, platforms: dict) -> None:
    """The swarm sees the hostnames the scenario gave (repeated ones too)."""
    view = fleet.swarm_view(manager)
    for node_id, node in fleet.by_node_id.items():
        expected = platforms[node.name].get("hostname") or node.name
        assert view[node_id]["Description"]["Hostname"] == expected, node.name


# --- Raspberry Pi boot configuration --------------------------------------------


def test_not_rebooted(node: Node) -> None:
    """prepare.yml left a marker on the tmpfs /run; a reboot would remove it."""
    assert node.host.file(BOOT_MARKER).exists, f"{node.name} rebooted (or was not prepared)"


def test_kernel_cmdline(node: Node) -> None:
    if node.vars.get("docker_engine_raspberry_pi") is True:
        path = node.vars.get("docker_engine_cmdline_path", PI_CMDLINE_CANDIDATES[0])
        original = node.vars.get("harness_pi_cmdline")
        assert original, f"{node.name}: a Pi node needs harness_pi_cmdline (prepare.yml writes it)"
        content = node.host.file(path).content_string
        assert "\n" not in content.rstrip("\n"), f"{path} is not a single line: {content!r}"
        words = content.split()
        for flag in CGROUP_FLAGS:
            assert words.count(flag) == 1, f"{path}: {flag} appears {words.count(flag)} times"
        assert [w for w in words if w not in CGROUP_FLAGS] == original.split(), f"{path}: {content!r}"
    else:
        # prepare.yml gave every other node a boot command line at each place
        # the role would look for one on a Pi; the role must leave it alone.
        decoy = node.vars.get("harness_non_pi_cmdline")
        assert decoy, f"{node.name}: the scenario needs harness_non_pi_cmdline (config.yml)"
        for path in PI_CMDLINE_CANDIDATES:
            cmdline = node.host.file(path)
            assert cmdline.is_file, f"{node.name}: {path} is gone (prepare.yml writes it)"
            content = cmdline.content_string
            assert content == decoy + "\n", f"{node.name} is no Pi but its {path} was changed: {content!r}"


# --- Join tokens stay secret ---------------------------------------------------


def _secrets(fleet: Fleet) -> dict[str, str]:
    """Both join tokens and their secret parts (SWMTKN-1-<CA hash>-<secret>)."""
    out = {}
    for kind, token in fleet.join_tokens.items():
        out[f"{kind} join token"] = token
        out[f"{kind} join token secret"] = token.rsplit("-", 1)[-1]
    return out


def test_join_tokens_not_in_files(node: Node, fleet: Fleet) -> None:
    patterns = " ".join(f"-e {value}" for value in _secrets(fleet).values())
    found = node.host.run(f"grep -rlsF --devices=skip {patterns} /etc /root")
    assert found.stdout.strip() == "", f"{node.name}: join token in {found.stdout.split()}"
    assert found.rc == 1, f"{node.name}: grep failed (rc={found.rc}): {found.stderr}"


def test_join_tokens_not_in_ansible_output(fleet: Fleet, ansible_log: str) -> None:
    assert ansible_log.strip(), "the Ansible log is empty"
    assert "PLAY RECAP" in ansible_log, "the Ansible log holds no playbook run"
    leaked = [what for what, value in _secrets(fleet).items() if value in ansible_log]
    assert not leaked, f"the Ansible output shows: {leaked}"


@pytest.mark.parametrize("kind", ["worker", "manager"])
def test_join_tokens_look_real(fleet: Fleet, kind: str) -> None:
    """Guards the two token tests: they must search for real tokens."""
    assert re.fullmatch(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}", fleet.join_tokens[kind])


@pytest.mark.changes_deployment
def test_a_node_of_another_swarm_is_refused_and_left_alone(pytestconfig, fleet: Fleet) -> None:
    """A worker that an admin put into a swarm of its own is refused by name, and nothing changes."""

    worker = next(n for n in fleet.nodes.values() if not n.is_manager)
    manager = fleet.first_manager
    address = worker.host.check_output("docker info --format %s", "{{.Swarm.NodeAddr}}").strip()
    worker.host.check_output("docker swarm leave --force")
    worker.host.check_output("docker swarm init --advertise-addr %s", address)
    own_id = worker.docker_info("{{.Swarm.NodeID}}")
    nodes_before = manager.host.check_output("docker node ls -q")

    run = playbook(pytestconfig, name="swarm.yml", succeed=False)
    output = " ".join((run.stdout + run.stderr).split())
    assert (
        f"{worker.name} is not free to join the swarm of {manager.name}: its swarm state is active "
        f"and its node ID {own_id} is not a node of that swarm. If it belongs to another swarm, run "
        "`docker swarm leave` on it first."
    ) in output, output[-3000:]
    # Refused before any change: the node keeps its own swarm, the fleet its nodes.
    assert worker.docker_info("{{.Swarm.NodeID}}") == own_id
    assert worker.docker_info("{{.Swarm.ControlAvailable}}") == "true"
    assert manager.host.check_output("docker node ls -q") == nodes_before


def test_the_swarm_stages_rerun_alone_by_tag(pytestconfig, fleet: Fleet) -> None:
    """`site.yml --tags engine,swarm,labels` on a formed fleet (README, Stages) runs and changes nothing.

    Those tags skip the image play, which sets the gateway's default image:
    the gateway role's variables must still validate without it.
    """
    run = playbook(pytestconfig, "--tags", "engine,swarm,labels", name="../site.yml")
    recap = changed_by_host(run.stdout)
    assert set(fleet.nodes) <= set(recap), run.stdout[-3000:]
    assert {host: changed for host, changed in recap.items() if changed} == {}, run.stdout[-3000:]
