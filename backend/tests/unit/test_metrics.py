"""The metrics' content and the route's token check, without Docker.

A configured ``SwarmBackend`` with real upstream cluster and worker records
in an in-memory ``DataManager``; the route runs in a real aiohttp server.
"""

import asyncio

import aiohttp
from aiohttp import web
from dask_gateway_server.backends.db_base import DataManager, JobStatus
from prometheus_client.parser import text_string_to_metric_families

from dask_gateway_swarm import SwarmBackend, SwarmClusterConfig


def backend_with(clusters):
    b = SwarmBackend(api_url="http://gateway:8000/api")
    b.db = DataManager(url="sqlite://")

    async def fill():
        # Upstream's records make asyncio flags: they need a running loop.
        for user, status, workers in clusters:
            cfg = SwarmClusterConfig(parent=b)
            cluster = b.db.create_cluster(user, {}, cfg.to_dict())
            b.db.update_cluster(cluster, status=status)
            for worker_status in workers:
                w = b.db.create_worker(cluster)
                b.db.update_worker(w, status=worker_status)

    asyncio.run(fill())
    return b


def samples(b):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(b.metrics.text().decode())
        for s in family.samples
    }


def test_clusters_and_workers_are_counted_by_user_and_state():
    b = backend_with([
        ("alice", JobStatus.RUNNING, [JobStatus.RUNNING, JobStatus.SUBMITTED]),
        ("alice", JobStatus.RUNNING, [JobStatus.RUNNING]),
        ("bob", JobStatus.FAILED, [JobStatus.FAILED]),
    ])
    found = samples(b)
    assert found[("dask_gateway_clusters", (("state", "running"), ("user", "alice")))] == 2
    assert found[("dask_gateway_clusters", (("state", "failed"), ("user", "bob")))] == 1
    assert found[("dask_gateway_workers", (("state", "running"), ("user", "alice")))] == 2
    assert found[("dask_gateway_workers", (("state", "submitted"), ("user", "alice")))] == 1
    assert ("dask_gateway_clusters", (("state", "running"), ("user", "bob"))) not in found


def test_pending_tasks_keep_only_the_last_checks_reasons():
    b = backend_with([])
    b.metrics.set_pending("worker", ["no suitable node (a)", "no suitable node (a)", "insufficient resources"])
    b.metrics.set_pending("cluster", ["no suitable node (b)"])
    found = samples(b)
    assert found[("dask_gateway_pending_tasks", (("kind", "worker"), ("reason", "no suitable node (a)")))] == 2
    b.metrics.set_pending("worker", ["insufficient resources"])
    found = samples(b)
    assert ("dask_gateway_pending_tasks", (("kind", "worker"), ("reason", "no suitable node (a)"))) not in found
    assert found[("dask_gateway_pending_tasks", (("kind", "worker"), ("reason", "insufficient resources")))] == 1
    assert found[("dask_gateway_pending_tasks", (("kind", "cluster"), ("reason", "no suitable node (b)")))] == 1


def test_starts_and_failures_are_recorded():
    b = backend_with([])
    b.metrics.observe_start("cluster", 1.7)
    b.metrics.observe_start("worker", 0.4)
    b.metrics.count_failure("worker")
    found = samples(b)
    assert found[("dask_gateway_start_seconds_count", (("kind", "cluster"),))] == 1
    assert found[("dask_gateway_start_seconds_bucket", (("kind", "cluster"), ("le", "2.0")))] == 1
    assert found[("dask_gateway_start_seconds_bucket", (("kind", "cluster"), ("le", "1.5")))] == 0
    assert found[("dask_gateway_start_failures_total", (("kind", "worker"),))] == 1


def test_the_route_serves_only_the_token():
    b = backend_with([("alice", JobStatus.RUNNING, [])])

    async def run():
        app = web.Application()
        app.router.add_get("/api/metrics", b.metrics.handler("s3cret"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/api/metrics"
        statuses = []
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                            {"Authorization": "Bearer s3cret"}):
                async with session.get(url, headers=headers) as resp:
                    statuses.append((resp.status, await resp.text()))
        await runner.cleanup()
        return statuses

    statuses = asyncio.run(run())
    assert [s for s, _ in statuses] == [401, 401, 401, 200]
    assert 'dask_gateway_clusters{state="running",user="alice"} 1.0' in statuses[-1][1]
    assert "s3cret" not in statuses[0][1]
