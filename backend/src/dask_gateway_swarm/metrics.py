"""Prometheus metrics of the Swarm backend, with ``prometheus_client``.

Counts that the gateway's database already holds (clusters and workers by
user and state) are read from it at each scrape, never kept twice. Events
(start latencies, start failures, Docker API calls) and the pending tasks
of the last status check are recorded as they happen. Each backend has a
registry of its own, served at ``/api/metrics`` to holders of the metrics
token.
"""

import collections
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

# Seconds from new_cluster() or scale() to a running scheduler or worker:
# a second or two when the image is there, minutes when capacity is short.
START_BUCKETS = (0.5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)
DOCKER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
KINDS = ("cluster", "worker")


class StateCollector:
    """Clusters and workers by user and state, from the gateway's database."""

    def __init__(self, backend):
        self.backend = backend

    def collect(self):
        clusters = GaugeMetricFamily(
            "dask_gateway_clusters", "Clusters by user and state.", labels=["user", "state"]
        )
        workers = GaugeMetricFamily(
            "dask_gateway_workers", "Workers by user and state.", labels=["user", "state"]
        )
        cluster_counts, worker_counts = collections.Counter(), collections.Counter()
        db = getattr(self.backend, "db", None)
        for cluster in db.name_to_cluster.values() if db is not None else ():
            cluster_counts[cluster.username, cluster.status.name.lower()] += 1
            for worker in cluster.workers.values():
                worker_counts[cluster.username, worker.status.name.lower()] += 1
        for (user, state), n in sorted(cluster_counts.items()):
            clusters.add_metric([user, state], n)
        for (user, state), n in sorted(worker_counts.items()):
            workers.add_metric([user, state], n)
        yield clusters
        yield workers


class Metrics:
    """What the backend records, and the route that serves it."""

    def __init__(self, backend):
        self.registry = CollectorRegistry()
        self.start_seconds = Histogram(
            "dask_gateway_start_seconds",
            "Seconds from creation to running, of schedulers (kind=cluster) and workers.",
            ["kind"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.start_failures = Counter(
            "dask_gateway_start_failures",
            "Schedulers (kind=cluster) and workers that failed before or while running.",
            ["kind"],
            registry=self.registry,
        )
        self.pending_tasks = Gauge(
            "dask_gateway_pending_tasks",
            "Swarm tasks of starting schedulers and workers that Swarm has not placed, by its reason.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.docker_seconds = Histogram(
            "dask_gateway_docker_api_seconds",
            "Seconds per Docker API call, by method.",
            ["method"],
            buckets=DOCKER_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StateCollector(backend))
        self._pending_labels = {kind: set() for kind in KINDS}

    def observe_start(self, kind, seconds):
        self.start_seconds.labels(kind).observe(max(0.0, seconds))

    def count_failure(self, kind):
        self.start_failures.labels(kind).inc()

    def set_pending(self, kind, reasons):
        """The pending tasks of one status check of ``kind``: a reason per task."""
        counts = collections.Counter(reasons)
        for reason in self._pending_labels[kind] - set(counts):
            self.pending_tasks.remove(kind, reason)
        for reason, n in counts.items():
            self.pending_tasks.labels(kind, reason).set(n)
        self._pending_labels[kind] = set(counts)

    def text(self):
        return generate_latest(self.registry)

    def handler(self, token):
        """An aiohttp handler serving the metrics to ``Authorization: Bearer <token>``."""
        expected = f"Bearer {token}".encode()

        async def metrics(request):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
            return web.Response(body=self.text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        return metrics
