"""An in-memory stand-in for the asynchronous dask_gateway client.

It only plays the client's side of the protocol so that the unit tests can
drive every branch of GatewayCheck (failures, time-outs, cleanup) quickly.
It does not pretend to test the real client: tests/integration/modules does,
against a real dask-gateway-server.
"""

import asyncio
import enum


class Status(enum.Enum):
    PENDING = 1
    RUNNING = 2


class Report:
    def __init__(self, name, status=Status.RUNNING):
        self.name = name
        self.status = status


def hang():
    """A coroutine that never finishes (until cancelled)."""
    return asyncio.sleep(3600)


class FakeScheduler:
    def __init__(self, client):
        self.client = client

    async def ncores(self):
        return dict(("tls://10.0.0.%d:4000" % i, 1) for i in range(self.client.gateway.workers_that_start))


class FakeClient:
    def __init__(self, gateway):
        self.gateway = gateway
        self.scheduler = FakeScheduler(self)
        self.closed = False

    def __await__(self):
        async def start():
            return self

        return start().__await__()

    def map(self, func, *iterables, **kwargs):
        return [func(*args) for args in zip(*iterables)]

    def submit(self, func, *args, **kwargs):
        return func(*args) + self.gateway.compute_error

    async def gather(self, value):
        return value

    async def get_versions(self, check=False):
        packages = {"python": "3.11.7.final.0", "dask": "2026.8.0", "distributed": "2026.8.0"}
        worker_packages = dict(packages, **self.gateway.worker_versions)
        return {
            "client": {"packages": dict(packages)},
            "scheduler": {"packages": dict(packages)},
            "workers": dict(
                ("tls://10.0.0.%d:4000" % i, {"packages": dict(worker_packages)}) for i in range(self.gateway.workers_that_start)
            ),
        }

    async def run(self, func):
        # The probe really runs here, once per fake worker, then the fake
        # puts the worker on the node the test asked for.
        out = {}
        for i in range(self.gateway.workers_that_start):
            info = func()
            node = self.gateway.worker_nodes[i % len(self.gateway.worker_nodes)]
            info.update(node=node, hostname="c%d" % i, node_source="DASK_SWARM_NODE_ID")
            out["tls://10.0.0.%d:4000" % i] = info
        return out

    async def close(self):
        self.closed = True


class FakeCluster:
    def __init__(self, gateway, name):
        self.gateway = gateway
        self.name = name
        self.dashboard_link = gateway.dashboard_link
        self.closed = False

    def __await__(self):
        async def start():
            if self.gateway.hang_on == "create":
                await hang()
            return self

        return start().__await__()

    def get_client(self, set_as_default=True):
        client = FakeClient(self.gateway)
        self.gateway.clients.append(client)
        return client

    async def close(self, shutdown=None):
        self.closed = True


class FakeGateway:
    """Records the calls; the attributes choose how it misbehaves."""

    def __init__(self, **kwargs):
        self.clusters = {}
        self.options = {"worker_cores": 1, "worker_memory": 2.0}
        self.workers_that_start = 3
        self.worker_nodes = ["node-a", "node-b"]
        self.worker_versions = {}
        self.compute_error = 0
        self.dashboard_link = None
        self.hang_on = None
        self.fail_on = {}
        self.stop_removes = True
        self.calls = []
        self.clients = []
        self.cluster_objects = []
        self.closed = False
        self._request_kwargs = {}
        self.__dict__.update(kwargs)

    async def _maybe(self, name):
        self.calls.append(name)
        if self.hang_on == name:
            await hang()
        if name in self.fail_on:
            raise self.fail_on[name]

    async def list_clusters(self):
        await self._maybe("list_clusters")
        return [Report(name) for name in self.clusters]

    async def cluster_options(self):
        await self._maybe("cluster_options")
        return dict(self.options)

    async def submit(self, cluster_options=None):
        await self._maybe("submit")
        name = "c%03d" % (len(self.calls))
        self.clusters[name] = dict(cluster_options or {})
        self.submitted = dict(cluster_options or {})
        return name

    def connect(self, name, shutdown_on_close=False):
        self.calls.append("connect")
        cluster = FakeCluster(self, name)
        self.cluster_objects.append(cluster)
        return cluster

    async def scale_cluster(self, name, n):
        await self._maybe("scale_cluster")
        self.scaled_to = n

    async def stop_cluster(self, name):
        await self._maybe("stop_cluster")
        if self.stop_removes:
            self.clusters.pop(name, None)

    async def close(self):
        self.closed = True
