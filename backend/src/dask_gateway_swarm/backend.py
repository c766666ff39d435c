"""``SwarmBackend``: its configuration and the life of a cluster on Swarm.

Starting and stopping schedulers and workers, their environment and
commands, the checks at ``new_cluster`` and ``scale`` and the periodic
tasks are here; the rest is one module per concern (see the package's
README, "Code layout").
"""

import asyncio

from docker.errors import APIError, NotFound
from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, validate

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import DBBackendBase, JobStatus
from dask_gateway_server.models import ClusterStatus
from dask_gateway_server.traitlets import Type
from dask_gateway_server.utils import timestamp

from . import placement, specs
from .config import SwarmClusterConfig
from .dns import use_system_resolver
from .limits import UserLimitsMixin
from .metrics import Metrics
from .status import SwarmStatusMixin
from .sweep import OrphanSweepMixin
from .swarm import SwarmClient

__all__ = ("SwarmClusterConfig", "SwarmBackend")

# The gateway looks up new schedulers and a redeployed hub by their names (dns.py).
use_system_resolver()


class SwarmBackend(UserLimitsMixin, SwarmStatusMixin, OrphanSweepMixin, DBBackendBase):
    """A cluster backend that runs schedulers and workers as Docker Swarm services.

    Gateway-wide and per-user limits, admins and allowed users come from
    ``UserLimitsMixin`` (``max_total_workers``, ``user_max_*``, ...), the
    status checks and failure reasons from ``SwarmStatusMixin``, the orphan
    sweep from ``OrphanSweepMixin``; Docker calls go through ``SwarmClient``.

    Must run on a Swarm manager with access to the Docker API (e.g. the
    socket mounted into the gateway's container), attached to ``network``.
    """

    cluster_config_class = Type(
        "dask_gateway_swarm.config.SwarmClusterConfig",
        klass="dask_gateway_server.backends.base.ClusterConfig",
        help="The cluster config class to use",
        config=True,
    )

    docker_url = Unicode(
        "unix:///var/run/docker.sock",
        help="Address of the Docker API of a Swarm manager.",
        config=True,
    )

    docker_timeout = Float(30, help="Timeout (s) of one Docker API call.", config=True)

    network = Unicode(
        "dask-gateway",
        help="""
        Overlay network shared by the gateway, the schedulers and the workers.

        Must exist: it is created outside the gateway's stack, so removing the
        stack does not fail on networks the clusters still use.
        """,
        config=True,
    )

    gateway_id = Unicode(
        "dask-gateway",
        help="""
        Identifies this gateway deployment in the labels of its services and
        secrets. Sweeping orphans only considers objects with this id.
        """,
        config=True,
    )

    service_prefix = Unicode(
        "dask",
        help="Prefix of service and secret names: ``<prefix>-<cluster name>``.",
        config=True,
    )

    label_prefix = Unicode(
        "dask-gateway-swarm",
        help="Namespace of every label set by this backend.",
        config=True,
    )

    worker_node_label = Unicode(
        "dask.worker",
        help="Workers run only on nodes with this node label set to ``true``.",
        config=True,
    )

    scheduler_node_label = Unicode(
        "",
        help="""
        Schedulers run only on nodes with this node label set to ``true``.

        Empty (default): schedulers run on managers.
        """,
        config=True,
    )

    node_pool_label = Unicode(
        "dask.pool",
        help="Node label selected by the ``node_pool`` cluster option.",
        config=True,
    )

    one_worker_per_node_port = Integer(
        0,
        help="""
        When non-zero, every worker publishes this port in host mode, which a
        node can give to one task only, so Swarm places at most one Dask
        worker per node (across all clusters). Nothing listens on it; pick a
        port that is free on the worker nodes. 0: no such limit.
        """,
        config=True,
    )

    container_user = Unicode(
        "1000:1000",
        help="``uid:gid`` the scheduler and worker containers run as; owns the secrets.",
        config=True,
    )

    stop_grace_period = Float(
        5, help="Seconds between SIGTERM and SIGKILL of a container.", config=True
    )

    sweep_on_start = Bool(
        True,
        help="At start, remove services and secrets of this gateway that "
        "belong to no live cluster.",
        config=True,
    )

    orphan_sweep_period = Float(
        300,
        help="""
        Seconds between sweeps of services and secrets that belong to no live
        cluster, e.g. left by a Docker error during a stop. 0: only at start.
        """,
        config=True,
    )

    unplaceable_timeout = Float(
        5,
        help="""
        Seconds a starting scheduler or worker may stay pending for a reason
        waiting cannot change (no node with its labels, say) before it counts
        as failed; Swarm's reason is logged and, for a scheduler, returned to
        the client. Waiting for capacity (cores, memory, a worker slot) is
        logged and given the start timeout.
        """,
        config=True,
    )

    allowed_image_prefixes = List(
        Unicode(),
        help="""
        Registries, namespaces or repositories a cluster's ``image`` option
        must name or lie under, e.g. the fleet's registry (``10.0.0.2:5000``)
        or a namespace of it (``10.0.0.2:5000/lab/``). Matched at the
        reference's boundaries: ``registry.lab`` admits
        ``registry.lab/x:1``, not ``registry.lab.evil.com/x``. Empty: any
        image. The configured ``SwarmClusterConfig.image`` is always allowed.
        """,
        config=True,
    )

    @validate("allowed_image_prefixes")
    def _check_prefixes(self, proposal):
        for prefix in proposal.value:
            if not prefix.strip("/") or any(c.isspace() for c in prefix) or "://" in prefix:
                raise TraitError(
                    f"allowed_image_prefixes: {prefix!r} is not a registry, namespace or "
                    "repository (e.g. '10.0.0.2:5000' or '10.0.0.2:5000/lab/')"
                )
        return proposal.value

    docker_threads = Integer(4, help="Threads for blocking Docker API calls.", config=True)

    metrics_token_file = Unicode(
        "",
        help="""
        A file holding the token Prometheus presents (``Authorization:
        Bearer <token>``) to read ``/api/metrics``. Empty: no metrics route.
        """,
        config=True,
    )

    supports_bulk_shutdown = True

    @default("cluster_status_period")
    def _default_cluster_status_period(self):
        return 5

    @default("worker_status_period")
    def _default_worker_status_period(self):
        return 5

    # ------------------------------------------------------------------
    # Docker access

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.periodic = []
        self.metrics = Metrics(self)

    @property
    def naming(self):
        return specs.Naming(self.service_prefix, self.label_prefix, self.gateway_id)

    async def setup(self, app):
        # Before the base class starts its reconcilers: after a restart they
        # may act on persisted clusters at once.
        self.swarm = SwarmClient(
            self.docker_url,
            self.docker_timeout,
            self.docker_threads,
            lambda method, seconds: self.metrics.docker_seconds.labels(method).observe(seconds),
            self.log,
        )
        if self.metrics_token_file:
            with open(self.metrics_token_file, encoding="utf-8") as f:
                token = f.read().strip()
            app.router.add_get("/api/metrics", self.metrics.handler(token))
            self.log.info("Serving Prometheus metrics at /api/metrics")
        await super().setup(app)

    async def do_setup(self):
        info = await self.swarm.call("info")
        swarm = info.get("Swarm", {})
        if not swarm.get("ControlAvailable"):
            raise RuntimeError(
                f"Docker at {self.docker_url} is not a Swarm manager "
                f"(swarm state: {swarm.get('LocalNodeState')})"
            )
        await self.swarm.call("inspect_network", self.network)
        self.log.info(
            "Swarm backend using network %s, gateway id %s, worker node label %s",
            self.network,
            self.gateway_id,
            self.worker_node_label,
        )
        if self.sweep_on_start:
            await self.sweep_orphans()
        if self.orphan_sweep_period > 0:
            self.run_periodically(self.orphan_sweep_period, self.sweep_orphans, "Sweeping orphaned services")
        self.run_periodically(self.cluster_status_period, self.check_running, "Checking running clusters")

    def run_periodically(self, period, func, what):
        async def loop():
            while True:
                await asyncio.sleep(period)
                try:
                    await func()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.log.warning("%s failed: %r", what, exc)

        self.periodic.append(asyncio.ensure_future(loop()))

    async def do_cleanup(self):
        for task in self.periodic:
            task.cancel()
        if hasattr(self, "swarm"):
            self.swarm.close()

    # ------------------------------------------------------------------
    # Environment and commands

    def get_tls_paths(self, cluster):
        return (
            f"{specs.SECRETS_DIR}/{specs.SECRET_FILES['tls-cert']}",
            f"{specs.SECRETS_DIR}/{specs.SECRET_FILES['tls-key']}",
        )

    def get_env(self, cluster):
        env = super().get_env(cluster)
        # A path: the token is read from the secret file (it contains a "/").
        env["DASK_GATEWAY_API_TOKEN"] = (
            f"{specs.SECRETS_DIR}/{specs.SECRET_FILES['api-token']}"
        )
        return env

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """Upstream's, but a starting cluster whose scheduler reports addresses
        other than its own service's is failed: upstream routes the public
        proxy, and the gateway's own calls, to what the first heartbeats say,
        and a user's image (or preload) writes them."""
        cluster = self.db.get_cluster(cluster_name)
        if cluster is not None and cluster.status < JobStatus.RUNNING and cluster.target <= JobStatus.RUNNING:
            allowed = self.naming.scheduler_addresses(cluster_name)
            foreign = {key: msg.get(key) for key, ok in allowed.items() if msg.get(key) not in ok}
            if foreign:
                reason = "its scheduler reported addresses that are not its own: " + ", ".join(
                    f"{key} {value!r}" for key, value in sorted(foreign.items())
                )
                self.log.warning("Failing cluster %s of user %s: %s", cluster_name, cluster.username, reason)
                self.keep_failure_reason(cluster_name, reason)
                await self.stop_cluster(cluster_name, failed=True)
                return
        return await super().on_cluster_heartbeat(cluster_name, msg)

    def get_scheduler_env(self, cluster):
        env = super().get_scheduler_env(cluster)
        env["DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS"] = self.naming.scheduler_address(
            cluster.name
        )
        return env

    def get_scheduler_command(self, cluster):
        return cluster.config.scheduler_cmd + [
            "--protocol",
            "tls",
            "--host",
            "0.0.0.0",
            "--port",
            str(specs.SCHEDULER_PORT),
            "--dashboard-address",
            f":{specs.DASHBOARD_PORT}",
            "--preload",
            "dask_gateway_swarm.scheduler_preload",
            "--preload",
            "dask_gateway.scheduler_preload",
            "--dg-api-address",
            f"0.0.0.0:{specs.API_PORT}",
            "--dg-heartbeat-period",
            str(self.cluster_heartbeat_period),
            "--dg-adaptive-period",
            str(cluster.config.adaptive_period),
            "--dg-idle-timeout",
            str(cluster.config.idle_timeout),
        ]

    def worker_nthreads_memory_limit_args(self, cluster):
        return str(cluster.config.worker_threads), str(cluster.config.worker_memory_limit)

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        if scheduler_address is None:
            scheduler_address = self.naming.scheduler_address(cluster.name)
        cmd = super().get_worker_command(cluster, worker_name, scheduler_address)
        at = cmd.index("--dashboard-address")
        if cluster.config.get("worker_dashboard", False):
            cmd[at + 1] = f":{specs.DASHBOARD_PORT}"
        else:
            cmd[at:at + 2] = ["--no-dashboard"]
        if not cluster.config.get("worker_nanny", False):
            cmd.append("--no-nanny")
        return cmd

    # ------------------------------------------------------------------
    # Service specs

    def scheduler_service_spec(self, cluster, secrets):
        config = cluster.config
        return specs.service_spec(
            name=self.naming.scheduler_service(cluster.name),
            image=cluster.state.get("image") or config.image,
            command=self.get_scheduler_command(cluster),
            env=self.get_scheduler_env(cluster),
            labels=self.naming.scheduler_labels(cluster.name, cluster.username),
            network=self.network,
            resources=specs.resources(
                config.scheduler_cores,
                config.scheduler_cores_limit,
                config.scheduler_memory,
                config.scheduler_memory_limit,
            ),
            placement={"constraints": specs.scheduler_placement(self.scheduler_node_label)},
            secrets=self.secret_references(secrets),
            user=self.container_user,
            stop_grace_period=self.stop_grace_period,
        )

    def worker_service_spec(self, worker, secrets):
        cluster = worker.cluster
        config = cluster.config
        return specs.service_spec(
            name=self.naming.worker_service(cluster.name, worker.name),
            image=cluster.state.get("image") or config.image,
            command=self.get_worker_command(cluster, worker.name),
            env=self.get_worker_env(cluster),
            labels=self.naming.worker_labels(cluster.name, cluster.username, worker.name),
            network=self.network,
            resources=self.worker_resources(cluster),
            placement=self.worker_placement(cluster),
            secrets=self.secret_references(secrets),
            user=self.container_user,
            stop_grace_period=self.stop_grace_period,
            node_slot_port=self.one_worker_per_node_port or None,
        )

    def worker_resources(self, cluster):
        config = cluster.config
        return specs.resources(
            config.worker_cores,
            config.worker_cores_limit,
            config.worker_memory,
            config.worker_memory_limit,
        )

    def worker_placement(self, cluster):
        config = cluster.config
        return specs.worker_placement(
            self.worker_node_label,
            self.node_pool_label,
            config.get("node_pool") or None,
            config.get("worker_constraints") or (),
        )

    def secret_references(self, secrets):
        uid, _, gid = self.container_user.partition(":")
        return specs.secret_references(secrets, uid or "0", gid or uid or "0")

    # ------------------------------------------------------------------
    # Secrets

    def _secret_data(self, cluster, kind):
        if kind == "tls-cert":
            return cluster.tls_cert
        if kind == "tls-key":
            return cluster.tls_key
        return cluster.token.encode()

    async def create_secrets(self, cluster):
        """Create the cluster's secrets, all at once; returns ``{kind: (id, name)}``."""
        ids = await asyncio.gather(
            *(self.create_secret(cluster, kind) for kind in specs.SECRET_FILES)
        )
        self.log.debug("Secrets for cluster %s created", cluster.name)
        return {
            kind: (secret_id, self.naming.secret(cluster.name, kind))
            for kind, secret_id in zip(specs.SECRET_FILES, ids)
        }

    async def create_secret(self, cluster, kind):
        return await self.swarm.create_secret(
            self.naming.secret(cluster.name, kind),
            self._secret_data(cluster, kind),
            self.naming.secret_labels(cluster.name, cluster.username, kind),
        )

    async def remove_secrets(self, cluster_name):
        await self.swarm.remove_secrets(await self.swarm.secrets(self.naming.cluster_filter(cluster_name)))

    # ------------------------------------------------------------------
    # DBBackendBase interface

    async def process_cluster_options(self, user, request):
        """Refuse, at ``new_cluster``, an image no node could start."""
        options, config = await super().process_cluster_options(user, request)
        await self.check_image(config.image)
        return options, config

    async def check_image(self, image):
        """Raise ``PublicException`` naming ``image`` if it is not allowed or not found.

        Found means: the manager's engine resolves it in a registry (which
        also checks that engine's trust of that registry), or holds it.
        """
        if image == self.cluster_config_class(parent=self).image:
            return
        prefixes = self.allowed_image_prefixes
        if prefixes and not any(image_is_under(image, p) for p in prefixes):
            raise PublicException(
                f"image: {image} is not allowed here; images must come from "
                + " or ".join(prefixes)
            )
        try:
            await self.swarm.call("inspect_distribution", image)
            return
        except APIError as exc:
            reason = exc.explanation or str(exc)
        try:
            await self.swarm.call("inspect_image", image)
        except NotFound:
            raise PublicException(
                f"image: {image} is in no registry the fleet can reach and not on "
                f"the gateway's node ({reason})"
            ) from None
        self.log.info("Image %s is on this node only, not in a registry", image)

    async def do_start_cluster(self, cluster):
        secrets = await self.create_secrets(cluster)
        state = {"secrets": {k: list(v) for k, v in secrets.items()}, "image": cluster.config.image}
        yield state
        spec = self.scheduler_service_spec(cluster, secrets)
        service_id = await self.swarm.create_service(spec)
        self.log.info(
            "Scheduler service %s for cluster %s created", spec["name"], cluster.name
        )
        yield dict(state, service_id=service_id, service_name=spec["name"])

    async def do_stop_cluster(self, cluster):
        """Close the scheduler, remove the cluster's services, then its secrets.

        A scheduler that is asked to close (see ``scheduler_preload``) closes
        its workers and exits, so every process ends within about a second;
        Swarm removes the containers a few seconds later. The services are
        removed at once: one Swarm left running (the request failed) is
        stopped by Swarm itself, within ``stop_grace_period``.
        """
        await self.close_scheduler(cluster)
        services = await self.swarm.services(self.naming.cluster_filter(cluster.name))
        await self.swarm.remove_services(services)
        # Possible as soon as no service refers to them.
        await self.remove_secrets(cluster.name)
        self.log.info("Removed the %d services of cluster %s", len(services), cluster.name)

    async def close_scheduler(self, cluster, timeout=3):
        """Ask a running scheduler to close its workers and itself (best effort)."""
        if not cluster.api_address:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.session.post(
                    cluster.api_address + "/api/comm",
                    json={"op": "close"},
                    headers={"Authorization": "token %s" % cluster.token},
                    raise_for_status=True,
                )
        except Exception as exc:
            self.log.debug("Could not close the scheduler of %s: %r", cluster.name, exc)

    async def forward_message_to_scheduler(self, cluster, msg):
        """Upstream's, but a scale or adapt that no node could ever serve is
        refused with Swarm's reason, and a cluster that is not running says
        why it failed (the stock client raises GatewayClusterError on both).

        Upstream forwards the request and returns; the workers it asks for
        are created later, and their placement failures would reach only
        the gateway's log.
        """
        if cluster.status == ClusterStatus.FAILED and cluster.name in self.failure_reasons:
            raise PublicException(
                f"cluster {cluster.name} is not running: it failed: {self.failure_reasons[cluster.name]}"
            )
        if cluster.status == ClusterStatus.RUNNING and _wants_workers(msg):
            reason = await self.never_placed_reason(cluster)
            if reason:
                self.log.info("Refused to %s cluster %s: %s", msg["op"], cluster.name, reason)
                raise PublicException(f"cluster {cluster.name} cannot get workers: {reason}")
        await super().forward_message_to_scheduler(cluster, msg)

    async def never_placed_reason(self, cluster):
        """Why no node of the swarm could ever run a worker of ``cluster``; "" if one could."""
        reservations = self.worker_resources(cluster)["Reservations"]
        try:
            return placement.never_placed_reason(
                await self.swarm.nodes(),
                self.worker_placement(cluster)["constraints"],
                reservations["NanoCPUs"],
                reservations["MemoryBytes"],
            )
        except (APIError, ValueError) as exc:
            # Not a reason to refuse: Swarm judges the workers when they exist.
            self.log.warning("Could not check where cluster %s's workers may run: %s", cluster.name, exc)
            return ""

    async def do_start_worker(self, worker):
        secrets = {k: tuple(v) for k, v in worker.cluster.state["secrets"].items()}
        spec = self.worker_service_spec(worker, secrets)
        yield {"service_name": spec["name"]}
        service_id = await self.swarm.create_service(spec)
        self.log.debug("Worker service %s created", spec["name"])
        yield {"service_name": spec["name"], "service_id": service_id}

    async def do_stop_worker(self, worker):
        name = worker.state.get("service_id") or worker.state.get("service_name")
        if name:
            await self.swarm.remove_service(name, worker.state.get("service_name"))

    async def _cluster_to_running(self, cluster):
        self.metrics.observe_start("cluster", (timestamp() - cluster.start_time) / 1000)
        await super()._cluster_to_running(cluster)


def image_is_under(image, prefix):
    """Whether image reference ``image`` is ``prefix`` (a registry, a
    namespace or a repository) or lies under it. A prefix ending in ``/``
    holds what starts with it; any other must end where the reference has a
    boundary: a ``/``, or the ``:tag`` or ``@digest`` of a repository (a
    ``:`` followed by a ``/`` is a registry's port: another registry)."""
    if prefix.endswith("/"):
        return image.startswith(prefix)
    if not image.startswith(prefix):
        return False
    rest = image[len(prefix):]
    return rest == "" or rest[0] == "/" or (rest[0] in ":@" and "/" not in rest)


def _wants_workers(msg):
    """Whether a message for the scheduler asks for workers: scale to some, or adapt up to some."""
    if msg.get("op") == "scale":
        return msg.get("count", 0) > 0
    if msg.get("op") == "adapt":
        # adapt(active=False) turns adaptivity off: never refused.
        return msg.get("active", True) and (msg.get("maximum") is None or msg["maximum"] > 0)
    return False
