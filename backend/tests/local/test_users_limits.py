"""Accounts, admins and limits, end to end without Docker.

A real dask-gateway-server (``LocalLimitsBackend``: upstream's local-process
backend with ``UserLimitsMixin``, and ``UsersAuthenticator``) on 127.0.0.1,
driven by the stock ``dask_gateway`` client in asynchronous mode (every call
under a timeout; no loop thread whose ``__del__`` could deadlock).

Users: alice (admin), bob, carol. Limits of the shared server: 3 workers
gateway-wide, 2 clusters per user, bob at most 2 workers, carol at most 2.0
cores (scheduler and workers have 1 core each).
"""

import asyncio
import base64
import gc
import os
import secrets

import aiohttp
import pytest
from dask_gateway import BasicAuth, Gateway, GatewayClusterError

from dask_gateway_swarm.limits import OWN_CLUSTERS_PATH
from localgateway import (
    PASSWORDS,
    kill_cluster_processes,
    raises,
    start_server,
    stop_all_clusters,
    stop_server,
    submit_running,
    wait_for,
    wait_status,
    within,
)

LIMITS = """
import asyncio
from dask_gateway_server.options import Options

async def cluster_options(user):
    # As a per-user lookup would: start_cluster awaits here, so concurrent
    # new clusters interleave before their limit check.
    await asyncio.sleep(0.2)
    return Options()

c.LocalLimitsBackend.cluster_options = cluster_options
c.LocalLimitsBackend.max_total_workers = 3
c.LocalLimitsBackend.user_max_clusters = 2
c.LocalLimitsBackend.user_limit_overrides = {
    "bob": {"max_workers": 2},
    "carol": {"max_cores": 2.0},
}
c.LocalLimitsBackend.worker_stop_delay = 2.0
"""

CAP = (
    "Scale request of {n} workers exceeds the gateway-wide limit of {cap} workers "
    "for all users ({available} available)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("gateway"), extra=LIMITS)
    try:
        yield srv
    finally:
        stop_server(srv)
        kill_cluster_processes(srv.clusters_dir)


@pytest.fixture
def gw(server):
    """The shared server; every cluster is stopped (and gone) after the test."""
    yield server
    asyncio.run(stop_all_clusters(server))


def status_of(exc):
    assert isinstance(exc, aiohttp.ClientResponseError), repr(exc)
    return exc.status


# ----------------------------------------------------------------------
# Authentication


async def test_wrong_password_unknown_user_and_no_password_are_401(gw):
    for user, password in [
        ("alice", "bob-secret"),
        ("mallory", "bob-secret"),
        ("bob", None),
    ]:
        auth = BasicAuth(user, password) if password else BasicAuth(user)
        async with Gateway(gw.address, auth=auth, asynchronous=True) as client:
            assert status_of(await raises(client.list_clusters())) == 401
    async with aiohttp.ClientSession() as session:
        garbled = {"Authorization": "Basic " + base64.b64encode(b"bob").decode()}
        for headers in [{}, garbled, {"Authorization": "Basic %%%"}]:
            async with session.get(
                gw.address + "/api/v1/clusters/", headers=headers
            ) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == "Basic"
    async with gw.gateway("bob") as bob:
        assert await within(bob.list_clusters()) == []
    assert "bob-secret" not in gw.log_text() and "$2b$" not in gw.log_text()
    assert "Loaded 3 users (1 admins)" in gw.log_text()


# ----------------------------------------------------------------------
# Users cannot act as each other; the admin can


async def test_users_see_and_touch_only_their_clusters_admin_all(gw):
    async with gw.gateway("alice") as alice, gw.gateway("bob") as bob, gw.gateway(
        "carol"
    ) as carol:
        a, b = await asyncio.gather(submit_running(alice), submit_running(bob))

        assert [r.name for r in await within(bob.list_clusters())] == [b]
        assert await within(carol.list_clusters()) == []
        assert {r.name for r in await within(alice.list_clusters())} == {a, b}
        # Her own alone, admin or not, as the hub's clean-up asks for them.
        async with aiohttp.ClientSession() as session:
            for user, own in [("alice", {a}), ("bob", {b}), ("carol", set())]:
                auth = aiohttp.BasicAuth(user, PASSWORDS[user])
                async with session.get(gw.address + OWN_CLUSTERS_PATH, auth=auth) as resp:
                    assert resp.status == 200, (user, await resp.text())
                    listed = await resp.json()
                assert set(listed) == own, (user, listed)
                assert all("tls_key" not in c for c in listed.values()), listed
            async with session.get(gw.address + OWN_CLUSTERS_PATH) as resp:
                assert resp.status == 401

        # bob on alice's cluster: 403 from every route (the stock client
        # raises aiohttp's ClientResponseError for it)
        assert status_of(await raises(bob.get_cluster(a))) == 403
        assert status_of(await raises(bob.connect(a))) == 403
        assert status_of(await raises(bob.scale_cluster(a, 1))) == 403
        assert status_of(await raises(bob.adapt_cluster(a, maximum=1))) == 403
        assert status_of(await raises(bob.stop_cluster(a))) == 403
        assert (await within(alice.get_cluster(a))).status.name == "RUNNING"
        assert gw.worker_logs(a) == []

        # the admin connects to bob's cluster, scales and stops it
        cluster = await within(alice.connect(b))
        try:
            assert cluster.scheduler_info["type"] == "Scheduler"
            await within(cluster.scale(1))
        finally:
            await within(cluster.close())
        await wait_for(lambda: len(gw.worker_logs(b)) == 1)
        await within(alice.stop_cluster(b))
        await wait_status(bob, b, {"STOPPED"})
        assert (await within(alice.get_cluster(a))).status.name == "RUNNING"


# ----------------------------------------------------------------------
# Per-user limits


async def test_max_clusters_refused_also_when_concurrent(gw):
    async with gw.gateway("bob") as bob:
        results = await asyncio.gather(
            *(within(bob.submit()) for _ in range(3)), return_exceptions=True
        )
        gc.collect()
        names = [r for r in results if isinstance(r, str)]
        errors = [r for r in results if not isinstance(r, str)]
        assert len(names) == 2, results
        assert len(errors) == 1 and type(errors[0]) is ValueError, results
        assert (
            str(errors[0])
            == "User bob may run at most 2 clusters at once (2 running or starting)"
        )
        # a stopping cluster no longer counts as running or starting
        await within(bob.stop_cluster(names[0]))
        names.append(await within(bob.submit()))
    assert "Refused new cluster for user bob: 2 of at most 2 clusters" in gw.log_text()


async def test_per_user_worker_limit(gw):
    async with gw.gateway("bob") as bob:
        b1, b2 = await asyncio.gather(submit_running(bob), submit_running(bob))
        await within(bob.scale_cluster(b1, 1))
        exc = await raises(bob.scale_cluster(b2, 2))
        assert type(exc) is GatewayClusterError
        assert str(exc) == (
            "Scale request of 2 workers exceeds the per-user limit of 2 workers "
            "for user bob (1 available)"
        )
        await within(bob.scale_cluster(b2, 1))
        # "available": what b1 may hold, its own worker included
        assert str(await raises(bob.scale_cluster(b1, 2))).endswith(
            "for user bob (1 available)"
        )
        await within(bob.scale_cluster(b1, 0))
    assert f"Refused scaling cluster {b2} of user bob to 2 workers" in gw.log_text()


async def test_per_user_core_limit(gw):
    async with gw.gateway("carol") as carol:
        c1 = await submit_running(carol)
        exc = await raises(carol.scale_cluster(c1, 2))
        assert type(exc) is GatewayClusterError
        assert str(exc) == (
            "Scale request of 2 workers exceeds the per-user limit of 2.0 cores "
            "for user carol (1.0 cores available)"
        )
        await within(carol.scale_cluster(c1, 1))
        exc = await raises(carol.submit())
        assert type(exc) is ValueError
        assert str(exc) == (
            "New cluster with 1.0 scheduler cores exceeds the per-user limit of 2.0 "
            "cores for user carol (0.0 cores available)"
        )


# ----------------------------------------------------------------------
# Gateway-wide cap


async def test_gateway_wide_cap_with_concurrent_scales(gw):
    async with gw.gateway("alice") as alice, gw.gateway("bob") as bob:
        a1, a2, b1 = await asyncio.gather(
            submit_running(alice), submit_running(alice), submit_running(bob)
        )
        # Both sent at once: the first grant must count before any heartbeat.
        results = await asyncio.gather(
            within(alice.scale_cluster(a1, 2)),
            within(alice.scale_cluster(a2, 2)),
            return_exceptions=True,
        )
        refused = [r for r in results if r is not None]
        assert len(refused) == 1, results
        assert type(refused[0]) is GatewayClusterError
        assert str(refused[0]) == CAP.format(n=2, cap=3, available=1)
        winner, loser = (a1, a2) if results[0] is None else (a2, a1)

        await within(alice.scale_cluster(loser, 1))
        assert str(await raises(alice.scale_cluster(loser, 2))) == CAP.format(
            n=2, cap=3, available=1
        )
        assert str(await raises(bob.scale_cluster(b1, 1))) == CAP.format(
            n=1, cap=3, available=0
        )
        # a scale-down is accepted while the others hold the cap
        await within(alice.scale_cluster(winner, 1))
        await wait_for(
            lambda: len(gw.worker_logs(winner)) + len(gw.worker_logs(loser)) == 3
        )
        await asyncio.sleep(2)
        assert len(gw.worker_logs(winner)) == 2 and len(gw.worker_logs(loser)) == 1


async def test_adaptive_requests_are_clamped(gw):
    async with gw.gateway("alice") as alice, gw.gateway("bob") as bob:
        b1, a1 = await asyncio.gather(submit_running(bob), submit_running(alice))
        await within(bob.adapt_cluster(b1, minimum=3, maximum=3))
        await wait_for(lambda: len(gw.worker_logs(b1)) == 2)
        await within(alice.adapt_cluster(a1, minimum=3, maximum=3))
        await wait_for(lambda: len(gw.worker_logs(a1)) == 1)
        await asyncio.sleep(3)  # several heartbeats, each asking for 3
        assert len(gw.worker_logs(b1)) == 2  # per-user limit of bob
        assert len(gw.worker_logs(a1)) == 1  # gateway-wide cap: 3 - bob's 2
    log = gw.log_text()
    assert (
        f"Cluster {b1} of user bob asked for 3 workers, clamped to 2 by the per-user limit"
        in log
    )
    assert (
        f"Cluster {a1} of user alice asked for 3 workers, "
        "clamped to 1 by the gateway-wide limit"
        in log
    )


async def test_stopping_cluster_still_counts_its_workers(gw):
    async with gw.gateway("bob") as bob:
        b1, b2 = await asyncio.gather(submit_running(bob), submit_running(bob))
        await within(bob.scale_cluster(b1, 2))
        await wait_for(lambda: len(gw.worker_logs(b1)) == 2)
        await within(bob.stop_cluster(b1))
        # b1's workers take 2 s to stop (worker_stop_delay)
        exc = await raises(bob.scale_cluster(b2, 1))
        assert str(exc) == (
            "Scale request of 1 workers exceeds the per-user limit of 2 workers "
            "for user bob (0 available)"
        )
        await wait_status(bob, b1, {"STOPPED"})
        await within(bob.scale_cluster(b2, 2))


# ----------------------------------------------------------------------
# Configuration at startup


def test_bad_limit_override_fails_at_startup(tmp_path):
    extra = 'c.LocalLimitsBackend.user_limit_overrides = {"bob": {"max_wrkers": 1}}\n'
    srv = start_server(tmp_path, extra=extra, wait=False)
    try:
        assert srv.proc.wait(timeout=30) != 0
    finally:
        stop_server(srv)
    assert "user_limit_overrides['bob']: unknown limit 'max_wrkers'" in srv.log_text()


async def test_removed_user_clusters_stopped_at_restart(tmp_path):
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    persistent = f"""
c.LocalLimitsBackend.db_url = "sqlite:///{tmp_path}/gateway.sqlite"
c.LocalLimitsBackend.db_encrypt_keys = [{key!r}]
c.LocalLimitsBackend.stop_clusters_on_shutdown = False
"""
    srv = start_server(
        tmp_path, extra=persistent + "c.LocalLimitsBackend.max_total_workers = 3\n"
    )
    try:
        async with srv.gateway("bob") as bob, srv.gateway("carol") as carol:
            b1, b2, c1 = await asyncio.gather(
                submit_running(bob), submit_running(bob), submit_running(carol)
            )
            await within(bob.scale_cluster(b1, 2))
            await within(bob.scale_cluster(b2, 1))
            await wait_for(
                lambda: (len(srv.worker_logs(b1)), len(srv.worker_logs(b2))) == (2, 1)
            )
        stop_server(srv)
        assert os.path.isdir(srv.clusters_dir / c1)  # survived the shutdown

        # carol leaves the inventory; the cap is lowered below what bob holds
        srv = start_server(
            tmp_path,
            port=srv.port,
            users=("alice", "bob"),
            extra=persistent
            + 'c.LocalLimitsBackend.allowed_users = {"alice", "bob"}\n'
            + "c.LocalLimitsBackend.max_total_workers = 1\n",
        )
        assert f"Stopping cluster {c1} of removed user carol" in srv.log_text()
        async with srv.gateway("alice") as alice, srv.gateway("bob") as bob:
            await wait_status(alice, c1, {"STOPPED"})
            assert not os.path.exists(srv.clusters_dir / c1)
            for name in (b1, b2):
                assert (await within(bob.get_cluster(name))).status.name == "RUNNING"
            # a scale-down is never refused, though b2 alone fills the cap
            await within(bob.scale_cluster(b1, 1))
            exc = await raises(bob.scale_cluster(b2, 2))
            assert str(exc) == CAP.format(n=2, cap=1, available=0)
        await stop_all_clusters(srv)
    finally:
        stop_server(srv)
        kill_cluster_processes(srv.clusters_dir)
