"""Pure functions mapping clusters and workers to Swarm objects.

Nothing here talks to Docker: names, labels, placement and the arguments of
``docker.APIClient.create_service`` / ``create_secret`` are computed from the
cluster's name and config, so they can be unit tested.
"""

from docker.types import (
    ContainerSpec,
    EndpointSpec,
    NetworkAttachmentConfig,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)

__all__ = (
    "SCHEDULER_PORT",
    "DASHBOARD_PORT",
    "API_PORT",
    "SECRET_FILES",
    "Naming",
    "scheduler_placement",
    "worker_placement",
    "resources",
    "service_spec",
)

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
API_PORT = 8788

SECRETS_DIR = "/run/secrets"
# secret kind -> file name under /run/secrets
SECRET_FILES = {"tls-cert": "dask.crt", "tls-key": "dask.pem", "api-token": "api-token"}

MAX_NAME = 63  # Swarm service names double as DNS labels


class Naming:
    """Service/secret names and labels, all derived from ``cluster.name``.

    Parameters
    ----------
    prefix : str
        Prefix of service and secret names (``<prefix>-<cluster name>``).
    label_prefix : str
        Namespace of every label this backend sets (``<label_prefix>.cluster`` ...).
    gateway_id : str
        Identifies one gateway deployment; sweeping only touches objects
        carrying this id, so several gateways can share a swarm.
    """

    def __init__(self, prefix, label_prefix, gateway_id):
        self.prefix = prefix
        self.label_prefix = label_prefix
        self.gateway_id = gateway_id

    def label(self, key):
        return f"{self.label_prefix}.{key}"

    def scheduler_service(self, cluster_name):
        name = f"{self.prefix}-{cluster_name}"
        if len(name) > MAX_NAME:
            raise ValueError(f"service name {name!r} longer than {MAX_NAME} characters")
        return name

    def worker_service(self, cluster_name, worker_name):
        base = f"{self.scheduler_service(cluster_name)}-w-"
        # Worker names are random hex; a prefix is unique enough and keeps the
        # name a valid DNS label. The full name is in the worker label.
        room = MAX_NAME - len(base)
        if room < 8:
            raise ValueError(f"service prefix {self.prefix!r} too long for worker names")
        return base + worker_name[:room]

    def secret(self, cluster_name, kind):
        return f"{self.scheduler_service(cluster_name)}-{kind}"

    def base_labels(self, cluster_name, username):
        return {
            self.label("gateway"): self.gateway_id,
            self.label("cluster"): cluster_name,
            self.label("user"): username,
        }

    def scheduler_labels(self, cluster_name, username):
        labels = self.base_labels(cluster_name, username)
        labels[self.label("role")] = "scheduler"
        return labels

    def worker_labels(self, cluster_name, username, worker_name):
        labels = self.base_labels(cluster_name, username)
        labels[self.label("role")] = "worker"
        labels[self.label("worker")] = worker_name
        return labels

    def secret_labels(self, cluster_name, username, kind):
        labels = self.base_labels(cluster_name, username)
        labels[self.label("role")] = "secret"
        labels[self.label("secret")] = kind
        return labels

    def gateway_filter(self):
        """Docker ``filters`` selecting every object of this gateway."""
        return {"label": [f"{self.label('gateway')}={self.gateway_id}"]}

    def cluster_filter(self, cluster_name):
        return {
            "label": [
                f"{self.label('gateway')}={self.gateway_id}",
                f"{self.label('cluster')}={cluster_name}",
            ]
        }

    def scheduler_address(self, cluster_name):
        return f"tls://{self.scheduler_service(cluster_name)}:{SCHEDULER_PORT}"

    def scheduler_addresses(self, cluster_name):
        """What a cluster's scheduler may report in its first heartbeats, each
        address a set of the allowed (the dashboard may be off: empty)."""
        service = self.scheduler_service(cluster_name)
        return {
            "scheduler_address": {self.scheduler_address(cluster_name)},
            "api_address": {f"http://{service}:{API_PORT}"},
            "dashboard_address": {f"http://{service}:{DASHBOARD_PORT}", ""},
        }


def _label_constraint(label, value):
    return f"node.labels.{label}=={value}"


def scheduler_placement(scheduler_node_label=None):
    """Constraints for schedulers: a labelled node, or a manager by default."""
    if scheduler_node_label:
        return [_label_constraint(scheduler_node_label, "true")]
    return ["node.role==manager"]


def worker_placement(
    worker_node_label,
    node_pool_label=None,
    node_pool=None,
    extra_constraints=(),
):
    """Placement constraints of a worker service.

    Workers go only to nodes labelled ``<worker_node_label>=true`` and, if a
    node pool was chosen, ``<node_pool_label>=<node_pool>``. Workers of one
    cluster are spread over nodes (spread preference on ``node.id``).
    """
    constraints = [_label_constraint(worker_node_label, "true")]
    if node_pool:
        if not node_pool_label:
            raise ValueError("node_pool set but no node_pool_label configured")
        constraints.append(_label_constraint(node_pool_label, node_pool))
    constraints.extend(extra_constraints)
    return {"constraints": constraints, "preferences": [("spread", "node.id")]}


def resources(cores, cores_limit, memory, memory_limit):
    """Swarm reservations (placement only where capacity exists) and limits."""
    return Resources(
        cpu_reservation=int(cores * 1e9),
        cpu_limit=int(cores_limit * 1e9),
        mem_reservation=int(memory),
        mem_limit=int(memory_limit),
    )


def endpoint(node_slot_port=None):
    """The endpoint of a service: dnsrr (no IPVS), with no published port.

    ``node_slot_port`` implements "at most one worker per node" with Swarm's
    own scheduler: each worker publishes that port in host mode, and Swarm
    never places two tasks holding one host-mode port on a node, across all
    clusters and users ("host-mode port already in use" while pending).
    Nothing in the container listens on it. ``max replicas per node`` would
    bound only one service's replicas, and each worker is its own service; a
    generic resource per node fails on Docker 20.10 with overlay networks
    (moby/moby#44378).
    """
    if not node_slot_port:
        return EndpointSpec(mode="dnsrr")
    return EndpointSpec(mode="dnsrr", ports={node_slot_port: (node_slot_port, "tcp", "host")})


def secret_references(secrets, uid, gid):
    """``SecretReference``s for ``{kind: (secret_id, secret_name)}``, mode 0400."""
    return [
        SecretReference(
            secret_id,
            secret_name,
            filename=SECRET_FILES[kind],
            uid=str(uid),
            gid=str(gid),
            mode=0o400,
        )
        for kind, (secret_id, secret_name) in sorted(secrets.items())
    ]


def service_spec(
    *,
    name,
    image,
    command,
    env,
    labels,
    network,
    resources,
    placement,
    secrets,
    user,
    stop_grace_period,
    hostname=None,
    node_slot_port=None,
):
    """Keyword arguments for ``docker.APIClient.create_service``.

    Every service: one replica, restart policy none (the gateway decides what
    to restart), the endpoint of :func:`endpoint`, the cluster's secrets mounted
    read-only under /run/secrets, labels on the service and its containers.
    """
    # Swarm fills in the node a task runs on, so a worker can say where it is
    # (dask_swarm.gateway.gateway_check reports and checks the spread).
    env = {**env, "DASK_SWARM_NODE_ID": "{{.Node.ID}}"}
    container = ContainerSpec(
        image=image,
        command=command,
        env=env,
        labels=labels,
        user=user,
        secrets=secrets,
        stop_grace_period=int(stop_grace_period * 1e9),
        hostname=hostname,
        init=True,
        # Dask binds ports above 1024 and needs no privilege: no process of
        # a user's image, root or not, gets one (Docker's default set holds
        # CHOWN, SETUID, NET_RAW, ...). no-new-privileges has no Swarm
        # service option before Docker 27 (API 1.46); Debian's engine is 20.10.
        cap_drop=["ALL"],
    )
    task = TaskTemplate(
        container_spec=container,
        resources=resources,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(**placement),
        networks=[NetworkAttachmentConfig(network)],
    )
    return {
        "task_template": task,
        "name": name,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=1),
        "endpoint_spec": endpoint(node_slot_port),
    }
