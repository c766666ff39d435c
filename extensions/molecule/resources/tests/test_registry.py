"""The fleet's own registry (dask_swarm.gateway.registry) and what it serves.

Every node holds the fleet's image by the digest of its manifest list, the
gateway runs that reference, and engines trust the registry through its CA
only. Pulls are anonymous and read-only; pushes need the generated account.
A user's own image, pushed as a user would, computes through
``new_cluster(image=...)``; an image that is not there, or not from the
fleet's registry, is refused at ``new_cluster``, naming it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import DOCKER_ARCH, REGISTRY_DEFAULTS, Fleet, Node

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, open_client, open_cluster  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

pytestmark = pytest.mark.fleet_var("registry_enabled", True)

CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}
USER_IMAGE_MARK = "DASK_SWARM_USER_IMAGE"


def _var(fleet: Fleet, name: str) -> str:
    manager = fleet.first_manager
    if name in manager.vars:
        return str(manager.host.ansible("ansible.builtin.debug", f"var={name}", check=False)[name])
    return str(REGISTRY_DEFAULTS[name])


@pytest.fixture(scope="module")
def registry(fleet: Fleet, fleet_image: str) -> dict:
    """Where the registry is, as the nodes and the controller reach it."""
    host = fleet_image.split("/")[0].rsplit(":", 1)[0]
    return {
        "pull": f"{host}:{REGISTRY_DEFAULTS['registry_port']}",
        "push": f"{host}:{REGISTRY_DEFAULTS['registry_push_port']}",
        "ca": os.path.expanduser(_var(fleet, "registry_ca_file")),
        "user": REGISTRY_DEFAULTS["registry_push_username"],
        "password": Path(os.path.expanduser(_var(fleet, "registry_password_file"))).read_text().strip(),
    }


def _get(url: str, ca: str, auth: tuple[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_gateway_runs_the_fleet_image_by_list_digest(fleet_image: str, registry: dict) -> None:
    assert fleet_image.startswith(registry["pull"] + "/"), f"the gateway runs {fleet_image}, not from {registry['pull']}"
    assert "@sha256:" in fleet_image, f"the gateway's image {fleet_image} is not pinned by digest"


def test_every_node_holds_the_fleet_image_by_that_digest(node: Node, fleet_image: str) -> None:
    digests = json.loads(node.host.check_output("docker image inspect --format %s %s", "{{json .RepoDigests}}", fleet_image))
    assert fleet_image in digests, f"{node.name} holds {digests}, not {fleet_image}"
    arch = node.host.check_output("docker image inspect --format %s %s", "{{.Architecture}}", fleet_image).strip()
    assert arch == DOCKER_ARCH[node.arch]


def test_engines_trust_the_registry_through_its_ca_only(node: Node, registry: dict) -> None:
    for address in (registry["pull"], registry["push"]):
        ca = node.host.file(f"/etc/docker/certs.d/{address}/ca.crt")
        assert ca.exists and ca.mode == 0o644, f"{node.name} has no CA for {address}"
        assert ca.content_string == Path(registry["ca"]).read_text(), f"{node.name} trusts another CA for {address}"
    insecure = node.docker_info("{{json .RegistryConfig.IndexConfigs}}")
    assert f'"{registry["pull"]}"' not in insecure, f"{node.name} lists the registry as insecure: {insecure}"


def test_pulls_are_anonymous_and_pushes_need_the_account(registry: dict) -> None:
    ca, account = registry["ca"], (registry["user"], registry["password"])
    assert _get(f"https://{registry['pull']}/v2/", ca) == 200
    assert _get(f"https://{registry['push']}/v2/", ca) == 401
    assert _get(f"https://{registry['push']}/v2/", ca, account) == 200
    assert _get(f"https://{registry['push']}/v2/", ca, (registry["user"], "wrong")) == 401
    # Uploads: the pull side is read-only even for the account; the push side
    # takes them only with it.
    upload = "/v2/probe/blobs/uploads/"
    assert _get(f"https://{registry['pull']}{upload}", ca, method="POST") in (401, 405)
    assert _get(f"https://{registry['pull']}{upload}", ca, account, method="POST") in (401, 405)
    assert _get(f"https://{registry['push']}{upload}", ca, method="POST") == 401
    # The registry's certificate chains to the registry's CA, not the system's.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://{registry['pull']}/v2/", context=ssl.create_default_context(), timeout=10)


def test_the_push_password_is_owner_only_on_the_controller(fleet: Fleet) -> None:
    path = Path(os.path.expanduser(_var(fleet, "registry_password_file")))
    assert path.stat().st_mode & 0o777 == 0o600, f"{path} is {oct(path.stat().st_mode & 0o777)}"
    manager_file = fleet.first_manager.host.file(f"{REGISTRY_DEFAULTS['registry_state_dir']}/push.password")
    assert (manager_file.user, manager_file.mode) == ("root", 0o600)


# One line of the scenario's Ansible log: its time and the playbook run's pid.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) p=(\d+) ", re.M)
IMAGE_PLAY = "PLAY [Put the Dask image on every node]"


def _rerun_window(ansible_log: str) -> tuple[datetime, datetime]:
    """When Molecule's idempotence step ran: the second run of the site
    playbook that was not in check mode, first to last log line."""
    runs: dict[str, list[str]] = {}
    for match in LOG_LINE.finditer(ansible_log):
        stamp, pid = match.groups()
        end = ansible_log.find("\n", match.end())
        runs.setdefault(pid, []).append(stamp + ansible_log[match.end():end])
    site_runs = [lines for lines in runs.values()
                 if any(IMAGE_PLAY in line for line in lines) and not any("[CHECK MODE]" in line for line in lines)]
    assert len(site_runs) >= 2, f"the log holds {len(site_runs)} run(s) of the site playbook, not converge and idempotence"
    rerun = site_runs[1]
    # The log's times are this machine's local time; the registry's are UTC.
    def when(line: str) -> datetime:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone(timezone.utc)
    return when(rerun[0]), when(rerun[-1])


def test_the_rerun_pulled_no_image_data(fleet: Fleet, ansible_log: str) -> None:
    """Idempotence moves no bytes: during the rerun, no engine fetched a
    layer or config from the registry (the modules' own reads of manifests
    and image configs are not pulls)."""
    start, end = _rerun_window(ansible_log)
    stack = REGISTRY_DEFAULTS["registry_stack_name"]
    fetched = []
    for side in ("pull", "push"):
        logs = fleet.first_manager.host.check_output("docker service logs --timestamps --raw %s_%s 2>&1", stack, side)
        for line in logs.splitlines():
            if 'msg="response completed"' not in line or "http.request.method=GET" not in line or "/blobs/" not in line:
                continue
            if 'http.request.useragent="docker/' not in line:
                continue
            stamp = datetime.fromisoformat(line.split()[0][:26].rstrip("Z") + "+00:00")
            if start <= stamp <= end:
                fetched.append(line)
    assert not fetched, f"engines fetched {len(fetched)} blobs during the rerun ({start} to {end}): {fetched[:3]}"


@pytest.fixture(scope="module")
def user_image(fleet: Fleet, fleet_image: str, registry: dict) -> str:
    """A user's image FROM the fleet's, built and pushed as the README shows."""
    manager = fleet.first_manager.host
    tag = f"{registry['push']}/lab/user-image:1"
    dockerfile = f"FROM {fleet_image}\nENV {USER_IMAGE_MARK}=molecule\n"
    manager.check_output("printf '%%s' %s | docker build -q -t %s -", dockerfile, tag)
    login = manager.run("printf '%%s' %s | docker login --username %s --password-stdin %s",
                        registry["password"], registry["user"], registry["push"])
    assert login.rc == 0, login.stderr.replace(registry["password"], "***")
    try:
        manager.check_output("docker push -q %s", tag)
    finally:
        manager.run("docker logout %s", registry["push"])
        manager.run("docker image rm %s", tag)
    return f"{registry['pull']}/lab/user-image:1"


def test_a_users_own_image_computes_through_new_cluster(gateway_vars, login, user_image: str) -> None:
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(*login))
    try:
        with open_cluster(gateway, image=user_image, **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 1, timeout=180)
                marks = set(call(client.run, lambda: __import__("os").environ.get("DASK_SWARM_USER_IMAGE")).values())
                assert marks == {"molecule"}, f"the workers did not run {user_image}: {marks}"
                assert call(client.submit(sum, range(10)).result) == 45
    finally:
        close_gateway(gateway)


@pytest.mark.parametrize("image, expected", [
    ("{pull}/lab/no-such-image:1", "is in no registry the fleet can reach"),
    # Only a fleet that restricts images refuses one from elsewhere.
    pytest.param("debian:bookworm", "is not allowed here",
                 marks=pytest.mark.fleet_var("gateway_allowed_image_prefixes")),
])
def test_an_image_that_cannot_run_is_refused_at_new_cluster(gateway_vars, login, registry: dict, image: str, expected: str) -> None:
    image = image.format(**registry)
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(*login))
    try:
        with pytest.raises(Exception) as refused:
            call(gateway.new_cluster, image=image, **CLUSTER_OPTIONS)
        assert image in str(refused.value) and expected in str(refused.value), str(refused.value)
        assert call(gateway.list_clusters) == [], "a refused cluster was created"
    finally:
        close_gateway(gateway)
