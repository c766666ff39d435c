"""The options of one cluster: its image, cores, memory and placement.

Users set them in ``cluster_options``; administrators bound them in the
gateway's configuration (``c.SwarmClusterConfig...``).
"""

from traitlets import Bool, Float, List, Unicode, default

from dask_gateway_server.backends.base import ClusterConfig
from dask_gateway_server.traitlets import MemoryLimit

__all__ = ("SwarmClusterConfig",)


class SwarmClusterConfig(ClusterConfig):
    """Dask cluster configuration options when running as Swarm services"""

    scheduler_cmd = List(
        Unicode(),
        ["dask", "scheduler"],
        help="Command to start a dask scheduler.",
        config=True,
    )

    worker_cmd = List(
        Unicode(),
        ["dask", "worker"],
        help="Command to start a dask worker.",
        config=True,
    )

    image = Unicode(
        "dask-gateway-swarm:latest",
        help="Image of the scheduler and worker services.",
        config=True,
    )

    # Swarm reserves fractions of a core, so cores are floats (as in the
    # Kubernetes backend). Threads default to max(1, int(worker_cores)).
    worker_cores = Float(1, min=0, help="Cores reserved for a dask worker.", config=True)

    worker_cores_limit = Float(
        min=0,
        help="Maximum cores of a dask worker. Defaults to ``worker_cores``.",
        config=True,
    )

    @default("worker_cores_limit")
    def _default_worker_cores_limit(self):
        return self.worker_cores

    worker_memory_limit = MemoryLimit(
        help="Maximum memory of a dask worker. Defaults to ``worker_memory``.",
        config=True,
    )

    @default("worker_memory_limit")
    def _default_worker_memory_limit(self):
        return self.worker_memory

    scheduler_cores = Float(1, min=0, help="Cores reserved for the scheduler.", config=True)

    scheduler_cores_limit = Float(
        min=0,
        help="Maximum cores of the scheduler. Defaults to ``scheduler_cores``.",
        config=True,
    )

    @default("scheduler_cores_limit")
    def _default_scheduler_cores_limit(self):
        return self.scheduler_cores

    scheduler_memory_limit = MemoryLimit(
        help="Maximum memory of the scheduler. Defaults to ``scheduler_memory``.",
        config=True,
    )

    @default("scheduler_memory_limit")
    def _default_scheduler_memory_limit(self):
        return self.scheduler_memory

    node_pool = Unicode(
        "",
        help="""
        Value of ``SwarmBackend.node_pool_label`` a worker's node must carry.

        Empty (default): any node carrying the worker label.
        """,
        config=True,
    )

    worker_constraints = List(
        Unicode(),
        help="Extra Swarm placement constraints for workers.",
        config=True,
    )

    worker_dashboard = Bool(
        False,
        help="""
        Start a dashboard in each worker.

        Off by default: the gateway proxies only the scheduler's dashboard,
        so a worker's is out of the user's reach, and importing it costs each
        worker's start up to a second of CPU.
        """,
        config=True,
    )

    worker_nanny = Bool(
        False,
        help="""
        Run workers with a nanny process.

        Off by default: Swarm restarts nothing (restart policy none) and
        enforces the memory limit itself; without the nanny a worker starts
        faster and stops at once.
        """,
        config=True,
    )
