"""gateway_password_rotate: a rerun replaces the shared password, clusters survive.

Runs on a fleet with gateway_auth: simple (the default scenario). It reruns
the gateway play as an admin would, so it runs after every other test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import assert_no_secret_printed, changed_by_host, read_password

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_cluster, close_gateway, connect_and_compute, http_status, wait_for  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

pytestmark = [pytest.mark.auth("simple"), pytest.mark.changes_deployment, pytest.mark.gateway_variant]

CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}


def test_rotation_replaces_the_password_and_keeps_clusters(rerun_gateway, gateway_vars, fleet_secrets) -> None:
    url = gateway_vars["gateway_public_url"]
    password_file = Path(gateway_vars["gateway_password_file"])
    old = read_password(password_file)
    gateway = Gateway(url, auth=BasicAuth("rotation", old))
    try:
        cluster = call(gateway.new_cluster, shutdown_on_close=False, timeout=120, **CLUSTER_OPTIONS)
        name = cluster.name
        close_cluster(cluster, shutdown=False)
    finally:
        close_gateway(gateway)

    run = rerun_gateway("-e", '{"gateway_password_rotate": true}')
    new = read_password(password_file)
    assert new != old
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert_no_secret_printed(run, old, new, *fleet_secrets.values())
    api = url + "/api/v1/clusters/"
    wait_for(lambda: http_status(api, ("rotation", new)) == 200, 120, message="the new password to work")
    assert http_status(api, ("rotation", old)) == 401

    # A cluster started before the rotation computes with the new password.
    gateway = Gateway(url, auth=BasicAuth("rotation", new))
    try:
        connect_and_compute(gateway, name)
    finally:
        close_gateway(gateway)

    # Unchanged variables afterwards: the rerun changes nothing (no new rotation).
    again = rerun_gateway()
    assert read_password(password_file) == new
    recap = changed_by_host(again.stdout)
    assert recap and set(recap.values()) == {0}, again.stdout[-3000:]
