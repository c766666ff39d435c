"""How the Dask image reached the nodes.

dask_image_source: archive (the default scenario): every node runs the image
of the tarball on the controller, the very one (same image ID), which one
node loaded and pushed to the fleet's registry and the others pulled from
there (test_registry.py). The archive's copy on that node is removed.

dask_image_source: pull (the ha scenario): every node pulled the same image,
by the same registry digest, and the gateway runs that reference.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from conftest import Node

NODE_CACHE = "/var/cache/dask_swarm_gateway"


@pytest.fixture(scope="module")
def archive(fleet) -> dict:
    path = fleet.first_manager.host.ansible("ansible.builtin.debug", "var=dask_image_archive_path", check=False)[
        "dask_image_archive_path"
    ]
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
    config = manifest["Config"]
    # docker save names the config blobs/sha256/<hex> (OCI layout) or <hex>.json.
    image_id = "sha256:" + config.split("/")[-1].removesuffix(".json")
    stack = fleet.first_manager.vars.get("gateway_stack_name", "dask-gateway")
    fleet_ref = fleet.first_manager.host.check_output(
        "docker service inspect --format %s %s", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", f"{stack}_gateway"
    ).strip()
    return {"ref": manifest["RepoTags"][0], "id": image_id, "fleet_ref": fleet_ref}


@pytest.mark.fleet_var("dask_image_source", "archive")
def test_every_node_has_the_archives_image(node: Node, archive: dict) -> None:
    ref = archive["fleet_ref"]
    image_id = node.host.check_output("docker image inspect --format %s %s", "{{.Id}}", ref).strip()
    assert image_id == archive["id"], f"{node.name} has {ref} as {image_id}, the archive holds {archive['id']}"
    assert not node.host.file(f"{NODE_CACHE}/image.tar").exists, "the copied archive was left on the node"


@pytest.mark.fleet_var("dask_image_source", "pull")
def test_every_node_pulled_the_same_image_from_the_registry(fleet) -> None:
    ref = fleet.first_manager.vars["dask_image_pull_ref"]
    repository = ref.rsplit(":", 1)[0]
    digests = {}
    for node in fleet.nodes.values():
        out = node.host.check_output("docker image inspect --format %s %s", "{{json .RepoDigests}}", ref)
        digests[node.name] = [d for d in json.loads(out) if d.startswith(repository + "@sha256:")]
    assert all(len(d) == 1 for d in digests.values()), f"not pulled from {repository}: {digests}"
    assert len({d[0] for d in digests.values()}) == 1, f"the nodes hold different images: {digests}"
    manager = fleet.first_manager
    stack = manager.vars.get("gateway_stack_name", "dask-gateway")
    image = manager.host.check_output(
        "docker service inspect --format %s %s", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", f"{stack}_gateway"
    )
    assert image.startswith(ref), f"the gateway runs {image}, not {ref}"

