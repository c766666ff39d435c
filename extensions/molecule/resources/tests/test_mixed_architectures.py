"""A fleet of two architectures: x86_64 nodes and an arm64 Raspberry Pi.

Runs on a fleet with emulated Pis (the hetero scenario: group emulated_pis,
reached over SSH as the sudoer pi with become). The Pi is emulated under
qemu-user, which runs its engine and its containers but cannot run Swarm
tasks on an overlay network (../../../../README.md says so): so on the Pi
these tests check what Swarm and the engine do (join, labels, the image of
its architecture by digest, the image's Python, where tasks are placed),
and Dask computes on the x86 workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
# On sys.path through conftest.
from clienthelpers import call, open_client, open_cluster

from conftest import DOCKER_ARCH, EMULATED_GROUP, REPO, ROLES, Fleet, Node, worker_tasks

pytestmark = pytest.mark.fleet_group(EMULATED_GROUP)

CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}
PLACED_WITHIN = 60


@pytest.fixture(scope="module")
def pis(fleet: Fleet) -> list[Node]:
    return [node for node in fleet.nodes.values() if node.emulated]


def test_ansible_reaches_the_pi_as_pi_with_become(pis: list[Node]) -> None:
    for pi in pis:
        assert pi.vars["ansible_connection"] == "ssh" and pi.vars["ansible_user"] == "pi", pi.vars
        assert pi.host.check_output("id -un") == "root", f"{pi.name}: become did not make root"
        assert pi.host.check_output("sudo -n -u pi id -un") == "pi"
        assert pi.arch == "aarch64", f"{pi.name} runs {pi.arch}"


def test_the_pi_joined_as_an_arm64_node(fleet: Fleet, pis: list[Node]) -> None:
    view = fleet.swarm_view(fleet.first_manager)
    for pi in pis:
        node = view[pi.node_id]
        assert node["Description"]["Platform"]["Architecture"] == "aarch64", node["Description"]["Platform"]
        assert node["Status"]["State"] == "ready", node["Status"]
        assert node["Spec"]["Labels"].get("dask_swarm.arch") == "aarch64", node["Spec"]["Labels"]
    arches = {view[n.node_id]["Description"]["Platform"]["Architecture"] for n in fleet.nodes.values()}
    assert arches == {"x86_64", "aarch64"}, f"the swarm's architectures are {sorted(arches)}"


def test_the_fleet_image_is_one_list_of_both_architectures(fleet: Fleet, fleet_image: str) -> None:
    manifest = json.loads(_manifest(fleet, fleet_image))
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in manifest["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}, platforms


def _manifest(fleet: Fleet, reference: str) -> str:
    """The registry's manifest list, fetched on the manager through its engine's trust."""
    name, digest = reference.split("@")
    registry, repository = name.split("/", 1)
    ca = f"/etc/docker/certs.d/{registry}/ca.crt"
    return fleet.first_manager.host.check_output(
        "python3 -c %s %s %s",
        "import sys, ssl, urllib.request as u; r = u.Request(sys.argv[1], headers={'Accept': "
        "'application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json'}); "
        "print(u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())",
        f"https://{registry}/v2/{repository}/manifests/{digest}", ca,
    )


def test_the_pi_runs_its_own_architecture_of_the_image(pis: list[Node], fleet_image: str) -> None:
    for pi in pis:
        arch = pi.host.check_output("docker image inspect --format %s %s", "{{.Architecture}}", fleet_image)
        assert arch == DOCKER_ARCH[pi.arch], f"{pi.name} holds the {arch} image"
        # The image's own Python, on the Pi's engine: the backend imports.
        out = pi.host.check_output(
            "docker run --rm --network none --entrypoint python %s -c %s", fleet_image,
            "import platform, dask_gateway_swarm, distributed; print(platform.machine(), distributed.__version__)",
        )
        assert out.split()[0] == "aarch64", out


IMAGE_DEFAULTS = yaml.safe_load((ROLES / "dask_image" / "defaults" / "main.yml").read_text(encoding="utf-8"))


def _built_tag(node: Node, fleet_image: str) -> str:
    """The tag the node's architecture of the fleet image was built as (the image records it in its environment)."""
    env = json.loads(node.host.check_output("docker image inspect --format %s %s", "{{json .Config.Env}}", fleet_image))
    (ref,) = [item.split("=", 1)[1] for item in env if item.startswith("DASK_GATEWAY_SWARM_IMAGE_TAG=")]
    return ref


def _content_tag(node: Node) -> str:
    """The tag image/build.sh gives the image built from this node's base image archive."""
    archive = node.host.ansible("ansible.builtin.debug", "var=dask_image_base_image_archive", check=False)
    return subprocess.check_output(
        [str(REPO / "image" / "build.sh"), "--print-tag", "--repo", IMAGE_DEFAULTS["dask_image_repository"],
         "--base-image", IMAGE_DEFAULTS["dask_image_base_image"], "--base-archive",
         archive["dask_image_base_image_archive"], "--extra", "", "--python", sys.executable], text=True,
    ).splitlines()[-1]


def test_each_architecture_is_tagged_from_its_own_base_image(fleet: Fleet, pis: list[Node], fleet_image: str) -> None:
    """A new arm64 Debian must rebuild the arm64 image: its tag comes from
    the base archive the Pis build from, not from the x86 nodes' one."""
    built = {node.name: _built_tag(node, fleet_image) for node in (fleet.first_manager, *pis)}
    expected = {node.name: _content_tag(node) for node in (fleet.first_manager, *pis)}
    assert built == expected, f"the images were built as {built}; their base archives give {expected}"
    assert len(set(built.values())) == 2, f"both architectures have one tag, {built}, from different base images"


def _placements(fleet: Fleet, cluster: str) -> set[str]:
    """The nodes Swarm assigned the cluster's worker tasks to, whatever became of them."""
    return {task["node"] for task in worker_tasks(fleet, cluster, current=False) if task["node"]}


def test_workers_go_to_the_architecture_their_pool_names(gateway, fleet: Fleet, pis: list[Node]) -> None:
    pi_ids = {pi.node_id for pi in pis}
    x86_workers = {n.node_id for n in fleet.nodes.values()
                   if not n.emulated and n.expected_labels.get("dask.pool") == "x86"}
    # The default pool (x86): the cluster computes, on x86 nodes only.
    with open_cluster(gateway, **CLUSTER_OPTIONS) as cluster:
        call(cluster.scale, 2)
        with open_client(cluster) as client:
            call(client.wait_for_workers, 2, timeout=180)
            assert call(client.submit(sum, range(100)).result) == 4950
        placed = _placements(fleet, cluster.name)
        assert placed and placed <= x86_workers, f"x86 workers were placed on {sorted(placed)}, not only {sorted(x86_workers)}"
    # The Pis' pool: Swarm assigns the workers to the Pi (where emulation
    # then cannot start them) and to no other node.
    with open_cluster(gateway, node_pool="pi", **CLUSTER_OPTIONS) as cluster:
        call(cluster.scale, 1)
        deadline = time.monotonic() + PLACED_WITHIN
        while not (placed := _placements(fleet, cluster.name)) and time.monotonic() < deadline:
            time.sleep(1)
        assert placed, f"no worker task of the pi pool was placed within {PLACED_WITHIN} s"
        assert placed <= pi_ids, f"pi-pool workers were placed on {sorted(placed)}, not only on {sorted(pi_ids)}"
