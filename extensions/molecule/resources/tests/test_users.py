"""gateway_auth: users — accounts, admins and per-user limits, with the stock client.

Runs on a fleet whose inventory sets gateway_auth: users (the ha scenario:
alice is an admin, bob may run 1 worker, everyone at most 2 clusters), over
HTTPS with the role's CA. Everything goes through the public port on
127.0.0.1, as from a user's laptop.

The last tests change the deployment: they rerun the gateway play with a
rotated password and with a user removed, so they stay at the end of this
module, which is the last the verifier runs.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import aiohttp
import pytest

from conftest import Fleet, assert_no_secret_printed

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_cluster, close_gateway, http_status, wait_for  # noqa: E402
from dask_gateway import BasicAuth, Gateway, GatewayClusterError  # noqa: E402

pytestmark = pytest.mark.auth("users")

CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}


@pytest.fixture(scope="module")
def users(fleet: Fleet) -> dict:
    first = fleet.first_manager.vars
    return {"all": list(first["gateway_users"]), "admins": list(first.get("gateway_admins", []))}


def passwords(user_password_files: dict[str, Path]) -> dict[str, str]:
    return {user: path.read_text(encoding="utf-8").strip() for user, path in user_password_files.items()}


@pytest.fixture
def gateways(gateway_vars, user_password_files):
    """gateways(user) -> a stock Gateway logged in as that user; all closed afterwards."""
    opened = []
    current = passwords(user_password_files)

    def open_as(user: str) -> Gateway:
        gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(user, current[user]))
        opened.append(gateway)
        return gateway

    yield open_as
    for gateway in opened:
        close_gateway(gateway)
    gc.collect()


def names(gateway: Gateway) -> set[str]:
    return {c.name for c in call(gateway.list_clusters)}


def test_the_example_fleet_has_two_users_and_an_admin(users) -> None:
    assert len(set(users["all"]) - set(users["admins"])) >= 2 and users["admins"], users


def test_a_password_logs_in_only_its_own_user(gateway_vars, user_password_files, users) -> None:
    url = gateway_vars["gateway_public_url"] + "/api/v1/clusters/"
    pw = passwords(user_password_files)
    alice, bob = users["admins"][0], [u for u in users["all"] if u not in users["admins"]][0]
    assert http_status(url, (bob, pw[bob])) == 200
    assert http_status(url, (alice, pw[bob])) == 401, "bob's password logs in as alice"
    assert http_status(url, ("nobody", pw[bob])) == 401
    assert http_status(url, (bob, "")) == 401
    assert pw[alice] != pw[bob]


def test_the_gateway_holds_only_salted_hashes(gateway_vars, user_password_files, fleet: Fleet) -> None:
    manager = fleet.first_manager
    container = manager.host.check_output(
        "docker ps -q --filter label=com.docker.swarm.service.name=%s", gateway_vars["gateway_stack_name"] + "_gateway"
    ).split()[0]
    stored = manager.host.check_output("docker exec %s cat /run/secrets/gateway-users", container)
    import json

    hashes = json.loads(stored)
    assert set(hashes) == set(user_password_files)
    assert all(h.startswith("$2b$12$") for h in hashes.values()), "not bcrypt hashes"
    assert len(set(h[7:29] for h in hashes.values())) == len(hashes), "two users share a salt"
    for password in passwords(user_password_files).values():
        assert password not in stored


def test_users_act_only_on_their_own_clusters_and_admins_on_all(gateways, users) -> None:
    others = [u for u in users["all"] if u not in users["admins"]]
    admin, owner, stranger = users["admins"][0], others[0], others[1]
    as_owner, as_stranger, as_admin = gateways(owner), gateways(stranger), gateways(admin)
    cluster = call(as_owner.new_cluster, shutdown_on_close=False, timeout=180, **CLUSTER_OPTIONS)
    name = cluster.name
    close_cluster(cluster)
    try:
        assert name in names(as_owner)
        # Another user neither sees it, nor connects to, scales or stops it.
        assert name not in names(as_stranger)
        for action in (lambda: as_stranger.connect(name), lambda: as_stranger.stop_cluster(name)):
            with pytest.raises(aiohttp.ClientResponseError) as refused:
                call(action, timeout=60)
            assert refused.value.status == 403
            gc.collect()
        assert name in names(as_owner), "a refused stop_cluster stopped the cluster"
        # An admin sees every user's clusters, connects, scales and stops them.
        assert name in names(as_admin)
        connected = call(as_admin.connect, name, timeout=120)
        try:
            call(connected.scale, 1)
            wait_for(lambda: len(connected.scheduler_info.get("workers", {})) == 1, 180, message="the admin's scale(1)")
        finally:
            close_cluster(connected)
        call(as_admin.stop_cluster, name)
        wait_for(lambda: name not in names(as_owner), 90, message=f"the admin's stop_cluster of {name}")
        # Stopping clusters still count against the owner's limits: wait until it is stopped.
        wait_for(lambda: name in {c.name for c in call(as_owner.list_clusters, status="stopped")}, 120,
                 message=f"{name} to be stopped")
    finally:
        if name in names(as_owner):
            call(as_owner.stop_cluster, name)


def test_per_user_limits_refuse_with_the_numbers(gateways, users, fleet: Fleet) -> None:
    first = fleet.first_manager.vars
    limited = next(u for u, limits in first["gateway_user_limits"].items() if "max_workers" in limits)
    max_workers = first["gateway_user_limits"][limited]["max_workers"]
    max_clusters = first["gateway_user_max_clusters"]
    as_limited = gateways(limited)
    submitted = []
    try:
        submitted = [call(as_limited.submit, **CLUSTER_OPTIONS) for _ in range(max_clusters)]
        with pytest.raises(ValueError, match=rf"^User {limited} may run at most {max_clusters} clusters at once \({max_clusters} running or starting\)"):
            call(as_limited.submit, **CLUSTER_OPTIONS)
        gc.collect()
        cluster = call(as_limited.connect, submitted[0], timeout=180)
        try:
            with pytest.raises(GatewayClusterError, match=rf"^Scale request of {max_workers + 1} workers exceeds the per-user limit of {max_workers} workers for user {limited} \({max_workers} available\)"):
                call(cluster.scale, max_workers + 1)
            call(cluster.scale, max_workers)
        finally:
            close_cluster(cluster)
    finally:
        for name in submitted:
            call(as_limited.stop_cluster, name)
    wait_for(lambda: not names(as_limited), 120, message=f"{limited}'s clusters to stop")


def test_rotating_one_user_changes_only_that_password(rerun_gateway, gateway_vars, user_password_files, users, fleet_secrets) -> None:
    url = gateway_vars["gateway_public_url"] + "/api/v1/clusters/"
    rotated = [u for u in users["all"] if u not in users["admins"]][0]
    before = passwords(user_password_files)
    run = rerun_gateway("-e", '{"gateway_password_rotate_users": ["%s"]}' % rotated)
    after = passwords(user_password_files)
    assert after[rotated] != before[rotated]
    assert {u: p for u, p in after.items() if u != rotated} == {u: p for u, p in before.items() if u != rotated}
    assert_no_secret_printed(run, *before.values(), *after.values(), *fleet_secrets.values())
    wait_for(lambda: http_status(url, (rotated, after[rotated])) == 200, 120, message="the rotated password to work")
    assert http_status(url, (rotated, before[rotated])) == 401


def test_a_new_user_list_adds_and_removes_accounts(rerun_gateway, gateway_vars, user_password_files, users, fleet_secrets, fleet: Fleet) -> None:
    """One rerun removes a user (access revoked, clusters stopped) and adds
    one (a new password); the other users keep theirs."""
    url = gateway_vars["gateway_public_url"] + "/api/v1/clusters/"
    removed = [u for u in users["all"] if u not in users["admins"]][-1]
    added = "dave"
    kept = [u for u in users["all"] if u != removed]
    pw = passwords(user_password_files)
    new_file = Path(gateway_vars["gateway_user_password_dir"]) / f"{added}.password"
    new_file.unlink(missing_ok=True)  # an earlier run's, in Molecule's ephemeral directory
    gateway = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(removed, pw[removed]))
    try:
        name = call(gateway.submit, **CLUSTER_OPTIONS)
    finally:
        close_gateway(gateway)
    admin = users["admins"][0]
    as_admin = Gateway(gateway_vars["gateway_public_url"], auth=BasicAuth(admin, pw[admin]))
    try:
        assert name in names(as_admin)
        run = rerun_gateway("-e", '{"gateway_users": %s}' % str(kept + [added]).replace("'", '"'))
        new_password = new_file.read_text(encoding="utf-8").strip()
        assert len(new_password) >= 43 and new_file.stat().st_mode & 0o777 == 0o600
        assert_no_secret_printed(run, new_password, *pw.values(), *fleet_secrets.values())
        assert passwords({u: user_password_files[u] for u in kept}) == {u: pw[u] for u in kept}
        wait_for(lambda: http_status(url, (removed, pw[removed])) == 401, 120, message=f"{removed} to lose access")
        wait_for(lambda: name not in names(as_admin), 120, message=f"{removed}'s cluster {name} to stop")
        label = f"dask-gateway-swarm.cluster={name}"
        wait_for(lambda: not fleet.first_manager.host.check_output("docker service ls -q --filter label=%s", label), 60,
                 message=f"the services of {name} to go")
        for user in kept:
            assert http_status(url, (user, pw[user])) == 200
        assert http_status(url, (added, new_password)) == 200
    finally:
        close_gateway(as_admin)
