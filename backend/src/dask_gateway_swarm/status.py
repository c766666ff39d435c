"""What Swarm says about a gateway's clusters and workers, and what is kept of it.

``SwarmStatusMixin`` goes before ``DBBackendBase`` in the bases of the
backend. It answers upstream's status checks of starting clusters and
workers from Swarm's tasks, fails running ones whose task is lost, logs why
an object failed or waits, and keeps a cluster's reason for its client.
"""

import asyncio
import collections

from aiohttp import web

from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.models import ClusterStatus
from dask_gateway_server.utils import timestamp

from . import tasks as swarm_tasks

__all__ = ("SwarmStatusMixin",)

# Failure reasons kept for the clients of failed clusters: the newest ones.
_MAX_FAILURE_REASONS = 1000


class SwarmStatusMixin:
    """Status checks for a backend with ``swarm``, ``naming``, ``metrics``,
    ``unplaceable_timeout`` and upstream's ``db`` and ``queue``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failure_reasons = collections.OrderedDict()
        # Per kind of object: task ID -> when it was first seen unplaceable.
        self.stuck_since = {"cluster": {}, "worker": {}}
        self.waiting_logged = set()
        # Per running cluster: workers the gateway failed because Swarm lost
        # their task, which the scheduler may still count until distributed's
        # worker-ttl (minutes) passes.
        self.lost_workers = collections.defaultdict(set)

    async def do_check_clusters(self, clusters):
        return await self.check_services(clusters, "cluster")

    async def do_check_workers(self, workers):
        return await self.check_services(workers, "worker")

    async def check_services(self, objs, kind):
        """Status of many starting clusters/workers from two Docker calls.

        An object is alive while its service exists and its task may still
        run: not ended (restart policy none), and not pending for longer
        than ``unplaceable_timeout`` for a reason waiting cannot change.
        """
        if not any(o.state.get("service_id") for o in objs):
            return [False] * len(objs)
        existing, tasks, by_service = await self.service_tasks(objs)
        stuck_for = self.track_stuck_tasks(tasks, kind)
        self.metrics.set_pending(kind, filter(None, map(swarm_tasks.unplaceable_error, tasks)))
        out = []
        for obj in objs:
            service_id = obj.state.get("service_id")
            if service_id is None:
                # Its service was never created: nothing for Swarm to say.
                out.append(False)
                continue
            verdict = swarm_tasks.judge(
                by_service.get(service_id, []),
                service_id in existing,
                stuck_for,
                self.unplaceable_timeout,
            )
            self.report(obj, kind, verdict)
            out.append(verdict.alive)
        return out

    async def service_tasks(self, objs):
        """This gateway's service IDs, and the tasks of the objects' services
        (all, and by service ID), from two Docker calls."""
        ids = {o.state.get("service_id") for o in objs} - {None}
        services, tasks = await asyncio.gather(
            self.swarm.services(self.naming.gateway_filter()), self.swarm.tasks_of(ids)
        )
        by_service = collections.defaultdict(list)
        for t in tasks:
            by_service[t["ServiceID"]].append(t)
        return {s["ID"] for s in services}, tasks, by_service

    async def check_running(self):
        """Fail running schedulers and workers whose Swarm task is lost.

        Upstream learns that a scheduler died only when its heartbeats stop
        (twice ``cluster_heartbeat_period``), and that a worker's node is
        lost only when the scheduler drops it (distributed's worker-ttl,
        minutes). Swarm knows within seconds; a failed worker is replaced
        as soon as the cluster is reconciled.
        """
        active = self.db.active_clusters()
        clusters = [c for c in active if c.status == c.target == JobStatus.RUNNING]
        workers = [
            w
            for c in clusters
            for w in c.workers.values()
            if w.status == w.target == JobStatus.RUNNING and not w.close_expected
        ]
        for name in set(self.lost_workers) - {c.name for c in active}:
            del self.lost_workers[name]
        objs = [o for o in clusters + workers if o.state.get("service_id")]
        if not objs:
            return
        existing, _, by_service = await self.service_tasks(objs)
        lost = []
        nodes = {}
        for obj in objs:
            service_id = obj.state["service_id"]
            verdict = swarm_tasks.judge_running(by_service.get(service_id, []), service_id in existing)
            if verdict.alive:
                continue
            reason = verdict.reason
            node_id = verdict.stopped_on_node
            if node_id:
                if node_id not in nodes:
                    nodes[node_id] = await self.swarm.describe_node(node_id)
                reason = f"{reason}: {nodes[node_id]}"
            lost.append((obj, reason))
        # Only after the last await: a stop that began while Docker was
        # asked must not be overwritten with a failure.
        lost = [(o, r) for o, r in lost if o.target == JobStatus.RUNNING]
        lost_clusters = [(c, r) for c, r in lost if c in clusters]
        lost_workers = [(w, r) for w, r in lost if w not in clusters]
        for cluster, reason in lost_clusters:
            self.log.warning("Scheduler of running cluster %s lost: %s", cluster.name, reason)
            self.keep_failure_reason(cluster.name, reason)
        for worker, reason in lost_workers:
            self.log.warning(
                "Worker %s of cluster %s lost, replacing it: %s", worker.name, worker.cluster.name, reason
            )
            self.lost_workers[worker.cluster.name].add(worker.name)
        self.db.update_clusters([(c, {"target": JobStatus.FAILED}) for c, _ in lost_clusters])
        self.db.update_workers([(w, {"target": JobStatus.FAILED}) for w, _ in lost_workers])
        for obj, _ in lost:
            self.queue.put(obj)

    def track_stuck_tasks(self, tasks, kind):
        """Note when each unplaceable task was first seen; its age, as a function."""
        now = asyncio.get_running_loop().time()
        stuck = {t["ID"] for t in tasks if swarm_tasks.unplaceable_error(t)}
        since = self.stuck_since[kind]
        for task_id in set(since) - stuck:
            del since[task_id]
        for task_id in stuck:
            since.setdefault(task_id, now)
        return lambda task: now - since.get(task["ID"], now)

    def report(self, obj, kind, verdict):
        """Log why a cluster or worker failed or waits; keep a cluster's reason for its client."""
        cluster = obj if kind == "cluster" else obj.cluster
        what = f"Scheduler of cluster {cluster.name}" if kind == "cluster" else (
            f"Worker {obj.name} of cluster {cluster.name}"
        )
        if not verdict.alive:
            self.log.warning("%s failed: %s", what, verdict.reason)
            self.metrics.count_failure(kind)
            self.waiting_logged.discard(obj.name)
            # A worker's too: after worker_start_failure_limit of them,
            # upstream fails the cluster.
            self.keep_failure_reason(
                cluster.name, verdict.reason if kind == "cluster" else f"its worker {obj.name} failed: {verdict.reason}"
            )
        elif verdict.waiting_for_capacity:
            if obj.name not in self.waiting_logged:
                self.waiting_logged.add(obj.name)
                self.log.info("%s waits for capacity: %s", what, verdict.reason)
            if kind == "cluster":
                self.keep_failure_reason(
                    cluster.name, f"its scheduler waited for capacity: {verdict.reason}"
                )
        else:
            self.waiting_logged.discard(obj.name)
            if kind == "cluster":
                self.failure_reasons.pop(cluster.name, None)

    def keep_failure_reason(self, cluster_name, reason):
        self.failure_reasons[cluster_name] = reason
        self.failure_reasons.move_to_end(cluster_name)
        while len(self.failure_reasons) > _MAX_FAILURE_REASONS:
            self.failure_reasons.popitem(last=False)

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """Upstream's, timing each worker from its creation to its first
        heartbeat, and not counting workers the gateway found lost.

        A scheduler keeps a worker on a lost node until distributed's
        worker-ttl; counted, it would make upstream stop its replacement.
        """
        lost = self.lost_workers.get(cluster_name)
        if lost:
            msg = dict(
                msg,
                active_workers=[n for n in msg["active_workers"] if n not in lost],
                closing_workers=[n for n in msg["closing_workers"] if n not in lost],
            )
        cluster = self.db.get_cluster(cluster_name)
        starting = [] if cluster is None else [
            w for w in cluster.workers.values() if w.status < JobStatus.RUNNING
        ]
        await super().on_cluster_heartbeat(cluster_name, msg)
        now = timestamp()
        for worker in starting:
            if worker.status == JobStatus.RUNNING:
                self.metrics.observe_start("worker", (now - worker.start_time) / 1000)

    async def get_cluster(self, cluster_name, wait=False):
        """Upstream's, but a client waiting for a cluster that failed to start
        learns why (the stock client raises GatewayClusterError on 409)."""
        cluster = await super().get_cluster(cluster_name, wait=wait)
        reason = self.failure_reasons.get(cluster_name)
        if wait and reason and cluster is not None and cluster.status == ClusterStatus.FAILED:
            raise web.HTTPConflict(reason=f"Cluster {cluster_name} failed to start: {reason}")
        return cluster
