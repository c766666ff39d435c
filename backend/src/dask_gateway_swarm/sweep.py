"""The orphan sweep: Swarm objects of a gateway that belong to no live cluster.

A stop that failed half-way, or a gateway that died between creating a
service and recording it, leaves services (and the containers and
reservations they hold) and secrets behind. ``OrphanSweepMixin`` goes
before ``DBBackendBase`` in the bases of the backend, which runs the sweep
at start and then periodically.
"""

import logging

from dask_gateway_server.backends.db_base import JobStatus

__all__ = ("OrphanSweepMixin",)


class OrphanSweepMixin:
    """The sweep, for a backend with ``swarm``, ``naming`` and upstream's ``db``."""


    def live_objects(self):
        """Names of clusters and workers the database still considers alive."""
        clusters, workers = set(), set()
        for cluster in self.db.name_to_cluster.values():
            if cluster.status < JobStatus.STOPPED:
                clusters.add(cluster.name)
                for worker in cluster.workers.values():
                    if worker.status < JobStatus.STOPPED:
                        workers.add(worker.name)
        return clusters, workers

    async def sweep_orphans(self):
        """Remove this gateway's services and secrets that belong to no live cluster."""
        services = await self.swarm.services(self.naming.gateway_filter())
        secrets = await self.swarm.secrets(self.naming.gateway_filter())
        # The database is read after listing: anything created after the
        # listing is not in it, anything listed was recorded before.
        live_clusters, live_workers = self.live_objects()
        key_cluster = self.naming.label("cluster")
        key_role = self.naming.label("role")
        key_worker = self.naming.label("worker")
        orphans = []
        for s in services:
            labels = s["Spec"].get("Labels", {})
            if labels.get(key_cluster) not in live_clusters or (
                labels.get(key_role) == "worker"
                and labels.get(key_worker) not in live_workers
            ):
                orphans.append(s)
        await self.swarm.remove_services(orphans)
        orphan_secrets = [
            s for s in secrets if s["Spec"]["Labels"].get(key_cluster) not in live_clusters
        ]
        await self.swarm.remove_secrets(orphan_secrets)
        self.log.log(
            logging.INFO if orphans or orphan_secrets else logging.DEBUG,
            "Swept %d orphaned services and %d orphaned secrets",
            len(orphans),
            len(orphan_secrets),
        )
        return [s["Spec"]["Name"] for s in orphans], [
            s["Spec"]["Name"] for s in orphan_secrets
        ]
