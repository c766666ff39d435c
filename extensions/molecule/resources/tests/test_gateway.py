"""The deployed Dask Gateway, used from this machine as from a user's laptop.

The stock ``dask_gateway`` client connects through the gateway port that the
first manager's container publishes on 127.0.0.1 (``gateway_public_url`` in
the scenario's inventory), with a password file the gateway role wrote on
the controller: the shared one (gateway_auth: simple) or the first user's
(gateway_auth: users). Over HTTPS it trusts the role's CA through
SSL_CERT_FILE (conftest.py). Expected worker nodes come from the inventory's
labels.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Fleet, changed_by_host, gateway_log

# The client helpers of the backend's integration tests: a timeout on every
# blocking call, and Gateway/cluster objects closed exactly once.
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, http_status, open_client, open_cluster, wait_for  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

CLUSTER_LABEL = "dask-gateway-swarm.cluster"
NODE_ENV = "DASK_SWARM_NODE_ID"
# Small enough that a worker fits on every node container of this machine.
CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}


def test_cluster_computes_on_every_worker_node(gateway_vars, login, worker_nodes, fleet: Fleet) -> None:
    assert worker_nodes, "the inventory labels no active node for Dask workers"
    # Swarm places each single-task worker service on the node with the
    # fewest tasks; a scheduler on a worker node tips one placement, so two
    # workers per node reach every node, one per node would not.
    workers = 2 * len(worker_nodes)
    manager = fleet.first_manager
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(*login))
    try:
        with open_cluster(gateway, **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, workers)
            with open_client(cluster) as client:
                call(client.wait_for_workers, workers, timeout=180)
                # A lambda travels by value; a function of this module would not
                # import on the workers.
                ran_on = set(call(client.run, lambda: os.environ[NODE_ENV]).values())
                squares = call(client.gather, client.map(lambda x: x * x, range(200)))
                assert sum(squares) == sum(x * x for x in range(200))
                assert call(client.submit(sum, range(100)).result) == 4950
            assert ran_on == worker_nodes, (
                f"workers ran on {sorted(ran_on)}, the worker nodes are {sorted(worker_nodes)}"
            )
            name = cluster.name
            assert call(lambda: [c.name for c in gateway.list_clusters()]) == [name]
            services = f"docker service ls -q --filter label={CLUSTER_LABEL}={name}"
            assert manager.host.check_output(services), "the cluster has no Swarm service"
        wait_for(lambda: not call(gateway.list_clusters), 60, message=f"the gateway to drop {name}")
        wait_for(lambda: not manager.host.check_output(services), 60, message=f"the services of {name} to go")
    finally:
        close_gateway(gateway)


def test_wrong_password_gets_401(gateway_vars, login) -> None:
    url = gateway_vars["gateway_public_url"] + "/api/v1/clusters/"
    user, password = login
    assert http_status(url, (user, password)) == 200
    assert http_status(url, (user, password[::-1])) == 401
    assert http_status(url, (user, "")) == 401


def test_password_file_on_the_manager_is_root_only(gateway_vars, fleet: Fleet) -> None:
    manager = fleet.first_manager
    stored = manager.host.file(gateway_vars["gateway_state_dir"] + "/password")
    assert stored.is_file
    assert (stored.user, stored.group, stored.mode) == ("root", "root", 0o600)
    state_dir = manager.host.file(gateway_vars["gateway_state_dir"])
    assert (state_dir.user, state_dir.mode) == ("root", 0o700)


def test_password_files_on_the_controller_are_owner_only(gateway_vars, user_password_files, local) -> None:
    for path in [gateway_vars["gateway_password_file"], *map(str, user_password_files.values())]:
        copy = local.file(path)
        assert copy.is_file, path
        assert copy.mode == 0o600, path


def test_prometheus_reads_the_metrics_with_the_token(gateway_vars, login) -> None:
    """/api/metrics through the public port, as a Prometheus scrape job with
    `authorization: {credentials_file: ...}` reads it; nothing without the token."""
    token_file = Path(gateway_vars["gateway_password_file"].removesuffix(".password") + ".metrics-token")
    assert token_file.stat().st_mode & 0o777 == 0o600, f"{token_file} is not owner-only"
    url = gateway_vars["gateway_public_url"] + "/api/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    for family in ("dask_gateway_clusters", "dask_gateway_start_seconds", "dask_gateway_docker_api_seconds"):
        assert f"# TYPE {family} " in text, f"{family} is not in the metrics"


def test_no_secret_in_the_ansible_output(fleet_secrets: dict[str, str], ansible_log: str) -> None:
    assert "PLAY RECAP" in ansible_log, "the Ansible log holds no playbook run"
    printed = [what for what, value in fleet_secrets.items() if value in ansible_log]
    assert not printed, f"the Ansible output shows: {printed}"


def test_no_secret_in_the_gateway_service(gateway_vars, fleet_secrets: dict[str, str], auth_mode: str, fleet: Fleet) -> None:
    """Secrets reach the gateway as Swarm secret files, never in its service spec."""
    manager = fleet.first_manager
    spec = manager.host.check_output("docker service inspect %s", gateway_vars["gateway_stack_name"] + "_gateway")
    mount = {"simple": "gateway-password", "users": "gateway-users"}[auth_mode]
    assert mount in spec, f"the gateway service does not mount the {mount} secret"
    shown = [what for what, value in fleet_secrets.items() if value in spec]
    assert not shown, f"docker service inspect shows: {shown}"


def test_the_gateway_log_is_plain_text_without_secrets(gateway_vars, fleet_secrets: dict[str, str], fleet: Fleet) -> None:
    """What an operator reads with ``docker service logs``: no terminal colour codes, no secret."""
    log = gateway_log(fleet, gateway_vars["gateway_stack_name"])
    assert "Swarm backend using network" in log, log[-2000:]
    assert "\x1b[" not in log, "the gateway log holds terminal colour codes: " + repr(log[-500:])
    shown = [what for what, value in fleet_secrets.items() if value in log]
    assert not shown, f"the gateway log shows: {shown}"


@pytest.mark.fleet_var("gateway_tls", "provided")
def test_the_gateway_serves_the_provided_certificate(gateway_vars, fleet: Fleet) -> None:
    """gateway_tls: provided serves the user's certificate, and makes no CA of its own."""
    manager = fleet.first_manager
    cert_path = manager.host.ansible("ansible.builtin.debug", "var=gateway_tls_cert_path", check=False)["gateway_tls_cert_path"]
    url = urlsplit(gateway_vars["gateway_public_url"])
    served = ssl.get_server_certificate((url.hostname, url.port), timeout=10)
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text(encoding="utf-8"))
    tls_dir = f"{gateway_vars['gateway_state_dir']}/tls"
    assert not manager.host.file(f"{tls_dir}/ca.key").exists, "the role made a CA of its own"
    key = manager.host.file(f"{tls_dir}/tls.key")
    assert (key.user, key.mode) == ("root", 0o600)


@pytest.mark.gateway_variant
def test_a_gateway_only_run_with_no_gateway_to_keep_the_image_of_fails_before_any_change(rerun_gateway) -> None:
    """With the image play skipped (--skip-tags image) the gateway keeps the
    image of its running service; a stack that runs no gateway yet has no
    image to keep, and the role says so before it changes anything."""
    run = rerun_gateway("-e", '{"gateway_stack_name": "no-gateway-here"}', succeed=False)
    # ansible-core prints a task's error on stderr, and the YAML callback
    # folds long messages: compare with the whitespace collapsed.
    output = " ".join((run.stdout + run.stderr).split())
    assert "no gateway runs yet whose image could be kept" in output, run.stderr[-3000:]
    assert not any(changed_by_host(run.stdout).values()), "the failed run changed something"
