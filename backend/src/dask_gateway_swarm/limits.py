"""Admins, allowed users and limits on what users may run, for DB backends.

``UserLimitsMixin`` goes first in the bases of a ``DBBackendBase`` subclass::

    class SwarmBackend(UserLimitsMixin, DBBackendBase): ...

Accounting is in memory and synchronous: between checking a limit and
recording what it granted there is no ``await``, so the checks are race-free
within one gateway process. A cluster holds the most of

- the workers granted by its last accepted scale request (a reservation: the
  cluster's ``count`` only changes with the scheduler's next heartbeat),
- its ``count`` (the scheduler's last report, clamped),
- its workers not yet stopped,

and, once stopping, only its workers not yet stopped; a stopped cluster
holds nothing. Its cores are its workers times ``worker_cores`` plus its
``scheduler_cores``.
"""

from collections import namedtuple

from aiohttp import web
from traitlets import Dict, Float, Integer, Set, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.routes import api_handler

__all__ = ("UserLimitsMixin", "UserLimits", "validate_limit_overrides", "OWN_CLUSTERS_PATH")

# The caller's own active clusters, admins included: their list_clusters
# holds every user's, and what acts for one user (the hub's clean-up once a
# server stops) must not take it for theirs.
OWN_CLUSTERS_PATH = "/api/v1/self/clusters/"

LIMIT_KEYS = ("max_clusters", "max_workers", "max_cores")

UserLimits = namedtuple("UserLimits", LIMIT_KEYS)

# Float sums of cores: 0.1 + 0.2 must not exceed a limit of 0.3.
_EPSILON = 1e-9


def _fmt_cores(value):
    return repr(round(float(value), 3))


def validate_limit_overrides(overrides):
    """Check ``{user: {"max_clusters": .., "max_workers": .., "max_cores": ..}}``.

    Returns the overrides with ``max_cores`` as floats; raises ``TraitError``
    naming the user and the bad key or value.
    """
    out = {}
    for user, limits in overrides.items():
        where = f"user_limit_overrides[{user!r}]"
        if not isinstance(limits, dict):
            raise TraitError(
                f"{where}: expected a dict with keys {LIMIT_KEYS}, got {limits!r}"
            )
        checked = {}
        for key, value in limits.items():
            if key not in LIMIT_KEYS:
                raise TraitError(
                    f"{where}: unknown limit {key!r} "
                    f"(expected one of {', '.join(LIMIT_KEYS)})"
                )
            numeric = (float, int) if key == "max_cores" else (int,)
            if isinstance(value, bool) or not isinstance(value, numeric) or value < 0:
                kind = "number" if key == "max_cores" else "integer"
                raise TraitError(
                    f"{where}: {key} must be a non-negative {kind} (0: no limit), "
                    f"got {value!r}"
                )
            checked[key] = float(value) if key == "max_cores" else value
        out[user] = checked
    return out


class UserLimitsMixin(LoggingConfigurable):
    """Gateway-wide and per-user limits, admins and allowed users.

    A mixin for ``DBBackendBase`` subclasses; put it first in the bases.
    """

    max_total_workers = Integer(
        0,
        min=0,
        help="""
        Cap on the workers of all clusters of all users together.

        Scale requests beyond it are refused; adaptive scaling is clamped to
        it. 0 (default): no cap.
        """,
        config=True,
    )

    admin_users = Set(
        Unicode(),
        help="""
        Users who list every user's clusters (their own alone: GET
        /api/v1/self/clusters/).

        Use the same names as the authenticator's admin users (whose users may
        then also connect to, scale and stop any cluster).
        """,
        config=True,
    )

    allowed_users = Set(
        Unicode(),
        help="""
        If not empty, the only users whose clusters may keep running.

        At startup, every active cluster of a user not in this set is
        stopped: removing a user from the deployment's inventory stops that
        user's clusters once the gateway restarts. Empty (default): no check.
        """,
        config=True,
    )

    user_max_clusters = Integer(
        0,
        min=0,
        help="""
        Most clusters a user may run (or start) at once. 0 (default): no limit.
        """,
        config=True,
    )

    user_max_workers = Integer(
        0,
        min=0,
        help="""
        Most workers of all clusters of a user together. 0 (default): no limit.

        Scale requests beyond it are refused; adaptive scaling is clamped to it.
        """,
        config=True,
    )

    user_max_cores = Float(
        0,
        min=0,
        help="""
        Most cores of all clusters of a user together (workers times
        ``worker_cores`` plus ``scheduler_cores`` of every cluster).
        0 (default): no limit.
        """,
        config=True,
    )

    user_limit_overrides = Dict(
        help="""
        Per-user limits replacing the defaults, e.g.
        ``{"bob": {"max_clusters": 1, "max_workers": 4, "max_cores": 8}}``
        (any subset of ``max_clusters``, ``max_workers``, ``max_cores``;
        0: no limit).
        """,
        config=True,
    )

    @validate("user_limit_overrides")
    def _validate_user_limit_overrides(self, proposal):
        return validate_limit_overrides(proposal.value)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # cluster name -> workers granted by its last accepted scale request,
        # until a heartbeat reports that count.
        self.reservations = {}

    # ------------------------------------------------------------------
    # Accounting (synchronous: no await between a check and its grant)

    def user_limits(self, username):
        limits = self.user_limit_overrides.get(username, {})
        return UserLimits(
            limits.get("max_clusters", self.user_max_clusters),
            limits.get("max_workers", self.user_max_workers),
            limits.get("max_cores", self.user_max_cores),
        )

    def live_clusters(self, username=None):
        """Clusters not yet stopped (stopping ones included)."""
        if username is None:
            clusters = self.db.name_to_cluster.values()
        else:
            clusters = self.db.username_to_clusters.get(username, {}).values()
        return [c for c in clusters if c.status < JobStatus.STOPPED]

    def cluster_workers(self, cluster):
        """Workers ``cluster`` holds against the limits."""
        if cluster.status >= JobStatus.STOPPED:
            # A stopped cluster is never scaled again: forget its grant here.
            self.reservations.pop(cluster.name, None)
            return 0
        unstopped = sum(1 for w in cluster.workers.values() if w.status < JobStatus.STOPPED)
        if cluster.target > JobStatus.RUNNING:
            # Stopping: no new workers, the old ones count until stopped.
            return unstopped
        return max(self.reservations.get(cluster.name, 0), cluster.count, unstopped)

    def cluster_cores(self, cluster, workers=None):
        if cluster.status >= JobStatus.STOPPED:
            return 0.0
        if workers is None:
            workers = self.cluster_workers(cluster)
        config = cluster.config
        return workers * config.get("worker_cores", 1) + config.get("scheduler_cores", 1)

    def workers_in_use(self, exclude=None):
        """Workers held by all clusters except the one named ``exclude``."""
        return sum(
            self.cluster_workers(c) for c in self.live_clusters() if c.name != exclude
        )

    def workers_available(self, cluster_name):
        """Workers the cap leaves to ``cluster_name``; None without a cap."""
        if not self.max_total_workers:
            return None
        return max(0, self.max_total_workers - self.workers_in_use(cluster_name))

    def user_usage(self, username, exclude=None):
        """``(workers, cores)`` held by the user's clusters except ``exclude``."""
        workers = cores = 0
        for c in self.live_clusters(username):
            if c.name != exclude:
                n = self.cluster_workers(c)
                workers += n
                cores += self.cluster_cores(c, n)
        return workers, cores

    def worker_bounds(self, cluster):
        """``(workers allowed, description)`` of each limit on ``cluster``."""
        bounds = []
        available = self.workers_available(cluster.name)
        if available is not None:
            bounds.append(
                (
                    available,
                    f"the gateway-wide limit of {self.max_total_workers} workers "
                    f"for all users ({available} available)",
                )
            )
        user = cluster.username
        limits = self.user_limits(user)
        if not (limits.max_workers or limits.max_cores):
            return bounds
        used_workers, used_cores = self.user_usage(user, exclude=cluster.name)
        if limits.max_workers:
            available = max(0, limits.max_workers - used_workers)
            bounds.append(
                (
                    available,
                    f"the per-user limit of {limits.max_workers} workers for user "
                    f"{user} ({available} available)",
                )
            )
        if limits.max_cores:
            cores_left = max(
                0.0,
                limits.max_cores - used_cores - cluster.config.get("scheduler_cores", 1),
            )
            worker_cores = cluster.config.get("worker_cores", 1)
            allowed = (
                int(cores_left / worker_cores + _EPSILON)
                if worker_cores > 0
                else float("inf")
            )
            bounds.append(
                (
                    allowed,
                    f"the per-user limit of {_fmt_cores(limits.max_cores)} cores for user "
                    f"{user} ({_fmt_cores(cores_left)} cores available)",
                )
            )
        return bounds

    # ------------------------------------------------------------------
    # Checks

    def check_new_cluster(self, username, config):
        """Raise ``PublicException`` if ``username`` may not start another cluster."""
        limits = self.user_limits(username)
        if limits.max_clusters:
            running = sum(1 for c in self.live_clusters(username) if c.is_active())
            if running >= limits.max_clusters:
                self.log.info(
                    "Refused new cluster for user %s: %d of at most %d clusters "
                    "running or starting",
                    username,
                    running,
                    limits.max_clusters,
                )
                raise PublicException(
                    f"User {username} may run at most {limits.max_clusters} clusters "
                    f"at once ({running} running or starting)"
                )
        if limits.max_cores:
            scheduler_cores = config.scheduler_cores
            cores_left = max(0.0, limits.max_cores - self.user_usage(username)[1])
            if scheduler_cores > cores_left + _EPSILON:
                self.log.info(
                    "Refused new cluster for user %s: scheduler needs %s cores, "
                    "%s of the per-user limit of %s cores left",
                    username,
                    _fmt_cores(scheduler_cores),
                    _fmt_cores(cores_left),
                    _fmt_cores(limits.max_cores),
                )
                raise PublicException(
                    f"New cluster with {_fmt_cores(scheduler_cores)} scheduler cores "
                    f"exceeds the per-user limit of {_fmt_cores(limits.max_cores)} "
                    f"cores for user {username} ({_fmt_cores(cores_left)} cores available)"
                )

    def check_scale(self, cluster, count):
        """Raise ``PublicException`` if scaling ``cluster`` to ``count`` breaks a limit."""
        if count <= self.cluster_workers(cluster):
            # A scale-down never adds load: accept it even if others hold the
            # cap (e.g. after the cap was lowered), or nobody could shrink.
            return
        for allowed, description in self.worker_bounds(cluster):
            if count > allowed:
                self.log.info(
                    "Refused scaling cluster %s of user %s to %d workers: exceeds %s",
                    cluster.name,
                    cluster.username,
                    count,
                    description,
                )
                raise PublicException(
                    f"Scale request of {count} workers exceeds {description}"
                )

    def clamp_count(self, cluster, count):
        """The most of ``count`` the limits allow ``cluster`` (adaptive requests)."""
        held = self.cluster_workers(cluster)
        for allowed, description in self.worker_bounds(cluster):
            allowed = max(allowed, held)
            if count > allowed:
                self.log.info(
                    "Cluster %s of user %s asked for %d workers, clamped to %d by %s",
                    cluster.name,
                    cluster.username,
                    count,
                    allowed,
                    description,
                )
                count = allowed
        return count

    # ------------------------------------------------------------------
    # Backend interface

    async def setup(self, app):
        # Before the server starts, while its routes can still be added.
        app.router.add_get(OWN_CLUSTERS_PATH, api_handler(user_authenticated=True)(self.own_clusters))
        await super().setup(app)
        await self.stop_clusters_of_removed_users()

    async def own_clusters(self, request):
        """``GET OWN_CLUSTERS_PATH``: as upstream's cluster list (by name, no
        TLS keys), of the caller's own active clusters only."""
        clusters = await super().list_clusters(username=request["user"].name)
        return web.json_response({c.name: c.to_dict(full=False) for c in clusters})

    async def stop_clusters_of_removed_users(self):
        if not self.allowed_users:
            return
        for cluster in list(self.db.active_clusters()):
            if cluster.username not in self.allowed_users:
                self.log.info(
                    "Stopping cluster %s of removed user %s (not in allowed_users)",
                    cluster.name,
                    cluster.username,
                )
                await self.stop_cluster(cluster.name)

    async def list_clusters(self, username=None, statuses=None):
        if username in self.admin_users:
            username = None
        return await super().list_clusters(username=username, statuses=statuses)

    async def start_cluster(self, user, cluster_options):
        options, config = await self.process_cluster_options(user, cluster_options)
        # No await from the check to the new record (as upstream's start_cluster).
        self.check_new_cluster(user.name, config)
        cluster = self.db.create_cluster(user.name, options, config.to_dict())
        self.log.info("Created cluster %s for user %s", cluster.name, user.name)
        self.queue.put(cluster)
        return cluster.name

    async def forward_message_to_scheduler(self, cluster, msg):
        record = self.db.get_cluster(cluster.name)
        op = msg.get("op")
        if record is None or op not in ("scale", "adapt"):
            return await super().forward_message_to_scheduler(cluster, msg)
        if op == "adapt":
            await super().forward_message_to_scheduler(cluster, msg)
            # The scheduler now picks its count; heartbeats clamp it.
            self.reservations.pop(cluster.name, None)
            return
        count = msg["count"]
        self.check_scale(record, count)
        # Granted now: the count reaches cluster.count only with the next
        # heartbeat, and a concurrent request must already see it.
        previous = self.reservations.get(cluster.name)
        self.reservations[cluster.name] = count
        try:
            return await super().forward_message_to_scheduler(cluster, msg)
        except BaseException:
            if self.reservations.get(cluster.name) == count:
                if previous is None:
                    self.reservations.pop(cluster.name, None)
                else:
                    self.reservations[cluster.name] = previous
            raise

    async def on_cluster_heartbeat(self, cluster_name, msg):
        cluster = self.db.get_cluster(cluster_name)
        if cluster is not None and cluster.target <= JobStatus.RUNNING:
            count = self.clamp_count(cluster, msg["count"])
            if count != msg["count"]:
                msg = dict(msg, count=count)
            if self.reservations.get(cluster_name) == count:
                # The scheduler reports what was granted: count takes over.
                del self.reservations[cluster_name]
        # Upstream's handler has no await: the count is recorded at once.
        return await super().on_cluster_heartbeat(cluster_name, msg)
