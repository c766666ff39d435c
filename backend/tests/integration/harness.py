"""Deploy a Dask Gateway as a Swarm service on the local engine.

Used by the integration tests and by benchmarks/cluster_latency. Every object
created here carries ``dask-gateway-swarm.test-run=<run id>`` (the
DASK_SWARM_TEST_RUN of scripts/run-tests.sh, else one per deployment) and
``dask-gateway-swarm.test-deployment=<deployment id>``, which its names
carry too; every object the gateway's backend creates carries
``dask-gateway-swarm.gateway=<gateway id>``. Cleanup and "nothing left
behind" checks select by these labels only, so other users of the same
engine, and other test runs, are never touched.
"""

import base64
import contextlib
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
from docker.types import (
    ConfigReference,
    ContainerSpec,
    EndpointSpec,
    Mount,
    NetworkAttachmentConfig,
    RestartPolicy,
    SecretReference,
    TaskTemplate,
)

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "image" / "build.sh"
LABEL_PREFIX = "dask-gateway-swarm"
RUN_LABEL = f"{LABEL_PREFIX}.test-run"
DEPLOYMENT_LABEL = f"{LABEL_PREFIX}.test-deployment"
GATEWAY_LABEL = f"{LABEL_PREFIX}.gateway"
WORKER_NODE_LABEL = "dask.worker"


def docker_client():
    return docker.from_env(version="auto", timeout=60)


def build_image(timeout=900):
    """Build (or find) the content-tagged image; return its reference."""
    out = subprocess.run(
        [str(BUILD_SCRIPT)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    return out.stdout.strip().splitlines()[-1]


def _host_address():
    return "127.0.0.1"


def ensure_swarm(client):
    """Make the engine a single-node swarm manager; True if we initialised it."""
    state = client.info()["Swarm"]
    if state.get("LocalNodeState") == "active":
        if not state.get("ControlAvailable"):
            raise RuntimeError("this engine is a swarm worker, not a manager")
        return False
    client.swarm.init(advertise_addr=_host_address(), listen_addr="127.0.0.1:2377")
    return True


def leave_swarm(client):
    client.swarm.leave(force=True)


def this_node(client):
    return client.nodes.get(client.info()["Swarm"]["NodeID"])


def ensure_node_label(client, label, value="true"):
    """Set a node label on this node; return the previous value (None if unset)."""
    node = this_node(client)
    spec = node.attrs["Spec"]
    labels = dict(spec.get("Labels") or {})
    previous = labels.get(label)
    if previous != value:
        labels[label] = value
        spec["Labels"] = labels
        node.update(spec)
    return previous


def restore_node_label(client, label, previous):
    node = this_node(client)
    spec = node.attrs["Spec"]
    labels = dict(spec.get("Labels") or {})
    if previous is None:
        labels.pop(label, None)
    else:
        labels[label] = previous
    spec["Labels"] = labels
    node.update(spec)


def set_availability(client, availability):
    node = this_node(client)
    spec = node.attrs["Spec"]
    if spec.get("Availability") != availability:
        spec["Availability"] = availability
        node.update(spec)


@contextlib.contextmanager
def unavailable_pool(client, pool, label="dask.pool"):
    """This node carries the node pool's label but takes no new tasks (paused).

    A worker of that pool passes the gateway's scale-time check (a node of
    the pool exists) and Swarm cannot place it, as when the pool's nodes are
    down. What already runs here keeps running.
    """
    previous = ensure_node_label(client, label, pool)
    try:
        set_availability(client, "pause")
        yield
    finally:
        set_availability(client, "active")
        restore_node_label(client, label, previous)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG_TEMPLATE = """\
# Dask Gateway configuration, delivered as a Swarm config.
from dask_gateway_swarm import swarm_cluster_options


def _secret(name):
    with open("/run/secrets/" + name) as f:
        return f.read().strip()


c.DaskGateway.backend_class = "dask_gateway_swarm.SwarmBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = _secret("gateway-password")
c.DaskGateway.log_level = "INFO"
c.Proxy.address = ":8000"
c.Proxy.log_level = "warn"

c.SwarmBackend.api_url = "http://{service}:8000/api"
c.SwarmBackend.network = {network!r}
c.SwarmBackend.gateway_id = {gateway_id!r}
c.SwarmBackend.worker_node_label = {worker_node_label!r}
c.SwarmBackend.db_url = "sqlite:////data/gateway.sqlite"
c.SwarmBackend.db_encrypt_keys = [_secret("gateway-encrypt-key")]
c.SwarmBackend.stop_clusters_on_shutdown = False
c.SwarmBackend.metrics_token_file = "/run/secrets/gateway-metrics-token"
c.SwarmBackend.cluster_heartbeat_period = {heartbeat}
c.SwarmBackend.cluster_start_timeout = {cluster_start_timeout!r}
c.SwarmBackend.worker_start_timeout = {worker_start_timeout!r}
c.SwarmBackend.max_total_workers = {max_total_workers}
c.SwarmBackend.scheduler_node_label = {scheduler_node_label!r}
c.SwarmBackend.unplaceable_timeout = {unplaceable_timeout!r}
c.SwarmBackend.orphan_sweep_period = {orphan_sweep_period!r}
c.SwarmBackend.allowed_image_prefixes = {allowed_image_prefixes!r}
c.SwarmBackend.cluster_options = swarm_cluster_options(
    profiles={profiles!r},
    node_pools={node_pools!r},
    default_worker_cores={default_worker_cores!r},
    default_worker_memory={default_worker_memory!r},
    default_worker_cores_limit={default_worker_cores_limit!r},
    max_worker_cores={max_worker_cores!r},
    max_worker_memory={max_worker_memory!r},
)
c.SwarmClusterConfig.image = {image!r}
c.SwarmClusterConfig.scheduler_cores = {scheduler_cores!r}
c.SwarmClusterConfig.scheduler_cores_limit = {scheduler_cores_limit!r}
c.SwarmClusterConfig.scheduler_memory = {scheduler_memory!r}
c.SwarmClusterConfig.cluster_max_workers = {cluster_max_workers!r}
c.SwarmClusterConfig.idle_timeout = {idle_timeout!r}
"""

DEFAULTS = dict(
    heartbeat=5,
    cluster_start_timeout=60.0,  # upstream's defaults
    worker_start_timeout=60.0,
    max_total_workers=0,
    profiles={
        "small": {"worker_cores": 2, "worker_memory": "8 GiB"},
        "medium": {"worker_cores": 4, "worker_memory": "16 GiB"},
        "tiny": {"worker_cores": 0.25, "worker_memory": "512 MiB"},
    },
    node_pools=["arm64", "x86"],
    default_worker_cores=0.25,
    default_worker_memory="768 MiB",
    default_worker_cores_limit=1.0,
    max_worker_cores=4,
    max_worker_memory="16 GiB",
    scheduler_cores=0.1,
    scheduler_cores_limit=1.0,
    scheduler_memory="1 G",
    cluster_max_workers=None,
    idle_timeout=0.0,
    scheduler_node_label="",
    unplaceable_timeout=5.0,
    orphan_sweep_period=300.0,
    allowed_image_prefixes=[],
)


class GatewayDeployment:
    """A gateway service from the image, as an operator would run it.

    Config file as a Swarm config, password and DB encryption key as Swarm
    secrets, the SQLite database on a volume, port 8000 published in host
    mode; the client reaches it at http://127.0.0.1:<port>.
    """

    def __init__(self, client, image, run_id=None, port=None, **settings):
        self.client = client
        self.image = image
        # One run (run-tests.sh) deploys several gateways: the run id is what
        # its leftover check selects by, the deployment id keeps the
        # gateways' names and backend objects apart.
        self.run_id = run_id or os.environ.get("DASK_SWARM_TEST_RUN") or secrets.token_hex(4)
        self.deployment_id = f"{self.run_id}-{secrets.token_hex(3)}"
        self.name = f"dgs-test-{self.deployment_id}"
        self.gateway_id = f"test-{self.deployment_id}"
        self.network = f"{self.name}-net"
        self.volume = f"{self.name}-db"
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        self.metrics_token = secrets.token_urlsafe(24)
        self.settings = dict(DEFAULTS, **settings)
        self.labels = {RUN_LABEL: self.run_id, DEPLOYMENT_LABEL: self.deployment_id}
        self.service = None

    # -- lifecycle -------------------------------------------------------

    def config_text(self):
        return CONFIG_TEMPLATE.format(
            service=self.name,
            network=self.network,
            gateway_id=self.gateway_id,
            worker_node_label=WORKER_NODE_LABEL,
            # By ID: Swarm skips the registry pull (there is no registry here).
            image=self.client.images.get(self.image).id,
            **self.settings,
        )

    def deploy(self, timeout=60):
        c = self.client
        c.networks.create(
            self.network, driver="overlay", labels=self.labels, scope="swarm"
        )
        c.volumes.create(self.volume, labels=self.labels)
        pw = c.secrets.create(
            name=f"{self.name}-password", data=self.password.encode(), labels=self.labels
        )
        key = base64.urlsafe_b64encode(os.urandom(32))
        ek = c.secrets.create(
            name=f"{self.name}-encrypt-key", data=key, labels=self.labels
        )
        mt = c.secrets.create(
            name=f"{self.name}-metrics-token", data=self.metrics_token.encode(), labels=self.labels
        )
        cfg = c.configs.create(
            name=f"{self.name}-config-{secrets.token_hex(3)}",
            data=self.config_text().encode(),
            labels=self.labels,
        )
        # By ID: Swarm skips the registry pull (there is no registry here).
        image_id = c.images.get(self.image).id
        container = ContainerSpec(
            image_id,
            command=["dask-gateway-server", "-f", "/etc/dask-gateway/config.py"],
            user="0:0",
            labels=self.labels,
            mounts=[
                Mount("/data", self.volume, type="volume"),
                Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
            ],
            secrets=[
                SecretReference(pw.id, pw.name, filename="gateway-password", mode=0o400),
                SecretReference(ek.id, ek.name, filename="gateway-encrypt-key", mode=0o400),
                SecretReference(mt.id, mt.name, filename="gateway-metrics-token", mode=0o400),
            ],
            configs=[
                ConfigReference(cfg.id, cfg.name, filename="/etc/dask-gateway/config.py")
            ],
            init=True,
            stop_grace_period=int(10e9),
        )
        task = TaskTemplate(
            container,
            restart_policy=RestartPolicy(condition="any", delay=int(0.2e9)),
            placement={"Constraints": ["node.role==manager"]},
            networks=[NetworkAttachmentConfig(self.network)],
        )
        resp = c.api.create_service(
            task,
            name=self.name,
            labels=self.labels,
            endpoint_spec=EndpointSpec(
                mode="dnsrr",
                ports=[
                    {
                        "Protocol": "tcp",
                        "PublishedPort": self.port,
                        "TargetPort": 8000,
                        "PublishMode": "host",
                    }
                ],
            ),
        )
        self.service = resp["ID"]
        self.wait_healthy(timeout)
        return self

    def health(self):
        try:
            with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as r:
                return r.status
        except (urllib.error.URLError, OSError):
            return None

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"gateway {self.name} not healthy after {timeout} s:\n{self.logs()}")

    def running_task_ids(self):
        tasks = self.client.api.tasks(filters={"service": self.service})
        return {t["ID"] for t in tasks if t["Status"]["State"] == "running"}

    def restart(self, timeout=60):
        """Replace the gateway's container (a new task), wait until healthy."""
        before = self.running_task_ids()
        self.client.api.update_service(
            self.service, **self._update_args(force=True)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.running_task_ids()
            if now and not (now & before) and self.health() == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"gateway {self.name} not back after restart:\n{self.logs()}")

    def _update_args(self, force=False):
        inspect = self.client.api.inspect_service(self.service)
        spec = inspect["Spec"]
        task = spec["TaskTemplate"]
        if force:
            task["ForceUpdate"] = task.get("ForceUpdate", 0) + 1
        return dict(
            version=inspect["Version"]["Index"],
            task_template=task,
            name=spec["Name"],
            labels=spec.get("Labels"),
            mode=spec.get("Mode"),
            endpoint_spec=spec.get("EndpointSpec"),
        )

    def logs(self, tail=200):
        if not self.service:
            return ""
        try:
            out = self.client.api.service_logs(
                self.service, stdout=True, stderr=True, tail=tail, timestamps=False
            )
            return b"".join(out).decode(errors="replace")
        except Exception as exc:  # logs are diagnostics only
            return f"(no logs: {exc})"

    def remove(self, timeout=60):
        """Remove the gateway and whatever its backend left (by our labels)."""
        c = self.client
        if self.service:
            try:
                c.api.remove_service(self.service)
            except docker.errors.NotFound:
                pass
        self.remove_backend_objects()
        self.wait_no_containers(self.labels, timeout)
        for kind in ("secrets", "configs"):
            for obj in getattr(c, kind).list(filters=self.own_filter()):
                obj.remove()
        _retry(lambda: _remove_if_present(c.volumes, self.volume), timeout)
        _retry(lambda: _remove_if_present(c.networks, self.network), timeout)

    def own_filter(self):
        """Docker filters for the objects this deployment made itself."""
        return {"label": [f"{k}={v}" for k, v in self.labels.items()]}

    def backend_filter(self):
        return {"label": f"{GATEWAY_LABEL}={self.gateway_id}"}

    def cluster_filter(self, cluster_name, role=None):
        """Docker filters for one cluster's objects (of one role: scheduler, worker)."""
        labels = [f"{GATEWAY_LABEL}={self.gateway_id}", f"{LABEL_PREFIX}.cluster={cluster_name}"]
        if role:
            labels.append(f"{LABEL_PREFIX}.role={role}")
        return {"label": labels}

    def remove_backend_objects(self, timeout=60):
        c = self.client
        for s in c.api.services(filters=self.backend_filter()):
            try:
                c.api.remove_service(s["ID"])
            except docker.errors.NotFound:
                pass
        self.wait_no_containers({GATEWAY_LABEL: self.gateway_id}, timeout)
        for s in c.secrets.list(filters=self.backend_filter()):
            _retry(lambda: s.remove(), timeout)

    def wait_no_containers(self, labels, timeout):
        flt = {"label": [f"{k}={v}" for k, v in labels.items()]}
        deadline = time.monotonic() + timeout
        while self.client.api.containers(all=True, filters=flt):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    # -- what the backend left -------------------------------------------

    def backend_leftovers(self):
        """Services, secrets and containers carrying this gateway's backend labels."""
        c = self.client
        flt = self.backend_filter()
        return {
            "services": [s["Spec"]["Name"] for s in c.api.services(filters=flt)],
            "secrets": [s.name for s in c.secrets.list(filters=flt)],
            "containers": [x["Names"][0] for x in c.api.containers(all=True, filters=flt)],
        }


def _remove_if_present(collection, name):
    try:
        collection.get(name).remove()
    except docker.errors.NotFound:
        pass


def _retry(func, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return func()
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
