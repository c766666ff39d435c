"""Option-to-service-spec mapping, names, labels, placement, limits.

No Docker here: the backend's spec methods are called on a configured
``SwarmBackend`` with real upstream ``Cluster``/``Worker`` records from an
in-memory ``DataManager``.
"""

import base64
import os
import re

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import DataManager, JobStatus

from dask_gateway_swarm import SwarmBackend, SwarmClusterConfig, specs
from dask_gateway_swarm.swarm import SwarmClient

GIB = 2**30


@pytest.fixture
def backend():
    b = SwarmBackend(
        network="dask-net",
        gateway_id="gw1",
        api_url="http://gateway:8000/api",
        worker_node_label="dask.worker",
        node_pool_label="dask.pool",
    )
    b.db = DataManager(url="sqlite://")
    return b


def make_cluster(backend, username="alice", **config):
    cfg = SwarmClusterConfig(parent=backend, image="img:1", **config)
    cluster = backend.db.create_cluster(username, {}, cfg.to_dict())
    secrets = {k: (f"id-{k}", backend.naming.secret(cluster.name, k)) for k in specs.SECRET_FILES}
    backend.db.update_cluster(
        cluster,
        state={"secrets": {k: list(v) for k, v in secrets.items()}, "image": "sha256:abc"},
    )
    return cluster, secrets


def env_dict(spec):
    return dict(e.split("=", 1) for e in spec["task_template"]["ContainerSpec"]["Env"])


async def test_names_and_labels_come_from_cluster_name(backend):
    cluster, secrets = make_cluster(backend)
    spec = backend.scheduler_service_spec(cluster, secrets)
    assert spec["name"] == f"dask-{cluster.name}"
    assert str(cluster.id) not in spec["name"].replace(cluster.name, "")
    labels = spec["labels"]
    assert labels == {
        "dask-gateway-swarm.gateway": "gw1",
        "dask-gateway-swarm.cluster": cluster.name,
        "dask-gateway-swarm.user": "alice",
        "dask-gateway-swarm.role": "scheduler",
    }
    assert spec["task_template"]["ContainerSpec"]["Labels"] == labels

    worker = backend.db.create_worker(cluster)
    wspec = backend.worker_service_spec(worker, secrets)
    assert wspec["name"].startswith(f"dask-{cluster.name}-w-")
    assert len(wspec["name"]) <= 63
    assert worker.name.startswith(wspec["name"].rsplit("-", 1)[1])
    assert wspec["labels"]["dask-gateway-swarm.worker"] == worker.name
    assert wspec["labels"]["dask-gateway-swarm.role"] == "worker"


def test_long_prefix_refused():
    naming = specs.Naming("x" * 40, "p", "g")
    with pytest.raises(ValueError) as info:
        naming.scheduler_service("a" * 32)
    assert str(info.value) == f"service name {'x' * 40 + '-' + 'a' * 32!r} longer than 63 characters"


async def test_service_basics_dnsrr_restart_none_secrets(backend):
    cluster, secrets = make_cluster(backend)
    spec = backend.scheduler_service_spec(cluster, secrets)
    task = spec["task_template"]
    assert spec["endpoint_spec"]["Mode"] == "dnsrr"
    assert spec["mode"] == {"replicated": {"Replicas": 1}}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert [n["Target"] for n in task["Networks"]] == ["dask-net"]
    assert task["ContainerSpec"]["Image"] == "sha256:abc"
    assert task["ContainerSpec"]["User"] == "1000:1000"
    assert task["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert "CapabilityAdd" not in task["ContainerSpec"]
    refs = {s["File"]["Name"]: s for s in task["ContainerSpec"]["Secrets"]}
    assert set(refs) == {"dask.crt", "dask.pem", "api-token"}
    for ref in refs.values():
        assert ref["File"]["Mode"] == 0o400
        assert ref["File"]["UID"] == "1000"


async def test_no_secret_in_environment_or_command(backend):
    cluster, secrets = make_cluster(backend)
    worker = backend.db.create_worker(cluster)
    for spec in (
        backend.scheduler_service_spec(cluster, secrets),
        backend.worker_service_spec(worker, secrets),
    ):
        text = repr(spec)
        assert cluster.token not in text
        assert cluster.tls_key.decode() not in text
        assert cluster.tls_cert.decode() not in text
        env = env_dict(spec)
        assert env["DASK_GATEWAY_API_TOKEN"] == "/run/secrets/api-token"
        assert "/" in env["DASK_GATEWAY_API_TOKEN"]  # upstream reads it from a file
        assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/run/secrets/dask.crt"


async def test_scheduler_advertises_service_name_on_fixed_ports(backend):
    cluster, secrets = make_cluster(backend)
    spec = backend.scheduler_service_spec(cluster, secrets)
    cmd = spec["task_template"]["ContainerSpec"]["Command"]
    assert cmd[:2] == ["dask", "scheduler"]
    assert cmd[cmd.index("--port") + 1] == "8786"
    assert cmd[cmd.index("--dashboard-address") + 1] == ":8787"
    assert cmd[cmd.index("--dg-api-address") + 1] == "0.0.0.0:8788"
    preloads = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--preload"]
    assert preloads == ["dask_gateway_swarm.scheduler_preload", "dask_gateway.scheduler_preload"]
    env = env_dict(spec)
    assert env["DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS"] == f"tls://dask-{cluster.name}:8786"

    worker = backend.db.create_worker(cluster)
    wcmd = backend.worker_service_spec(worker, secrets)["task_template"]["ContainerSpec"]["Command"]
    assert wcmd[2] == f"tls://dask-{cluster.name}:8786"
    assert wcmd[wcmd.index("--name") + 1] == worker.name
    # The gateway proxies no worker dashboard: none is started.
    assert "--no-dashboard" in wcmd and "--dashboard-address" not in wcmd


async def test_worker_dashboard_on_request(backend):
    cluster, secrets = make_cluster(backend, worker_dashboard=True)
    worker = backend.db.create_worker(cluster)
    wcmd = backend.worker_service_spec(worker, secrets)["task_template"]["ContainerSpec"]["Command"]
    assert wcmd[wcmd.index("--dashboard-address") + 1] == ":8787"
    assert "--no-dashboard" not in wcmd


async def test_cores_and_memory_map_to_reservations_limits_threads(backend):
    cluster, secrets = make_cluster(
        backend,
        worker_cores=2,
        worker_cores_limit=3,
        worker_memory=8 * GIB,
        worker_memory_limit=10 * GIB,
    )
    worker = backend.db.create_worker(cluster)
    spec = backend.worker_service_spec(worker, secrets)
    res = spec["task_template"]["Resources"]
    assert res["Reservations"] == {"NanoCPUs": 2 * 10**9, "MemoryBytes": 8 * GIB}
    assert res["Limits"] == {"NanoCPUs": 3 * 10**9, "MemoryBytes": 10 * GIB}
    cmd = spec["task_template"]["ContainerSpec"]["Command"]
    assert cmd[cmd.index("--nthreads") + 1] == "2"
    assert cmd[cmd.index("--memory-limit") + 1] == str(10 * GIB)
    assert "--no-nanny" in cmd


async def test_fractional_cores_get_one_thread(backend):
    cluster, secrets = make_cluster(backend, worker_cores=0.25)
    worker = backend.db.create_worker(cluster)
    spec = backend.worker_service_spec(worker, secrets)
    cmd = spec["task_template"]["ContainerSpec"]["Command"]
    assert cmd[cmd.index("--nthreads") + 1] == "1"
    res = spec["task_template"]["Resources"]
    assert res["Reservations"]["NanoCPUs"] == 250_000_000
    assert res["Limits"]["NanoCPUs"] == 250_000_000  # limit defaults to cores


async def test_worker_placement_label_pool_spread(backend):
    cluster, secrets = make_cluster(backend, node_pool="arm64")
    worker = backend.db.create_worker(cluster)
    placement = backend.worker_service_spec(worker, secrets)["task_template"]["Placement"]
    assert placement["Constraints"] == [
        "node.labels.dask.worker==true",
        "node.labels.dask.pool==arm64",
    ]
    assert placement["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.id"}}]


async def test_worker_label_configurable_and_no_pool(backend):
    backend.worker_node_label = "gpu-box"
    cluster, secrets = make_cluster(backend)
    worker = backend.db.create_worker(cluster)
    placement = backend.worker_service_spec(worker, secrets)["task_template"]["Placement"]
    assert placement["Constraints"] == ["node.labels.gpu-box==true"]


async def test_scheduler_placement_defaults_to_managers(backend):
    cluster, secrets = make_cluster(backend)
    placement = backend.scheduler_service_spec(cluster, secrets)["task_template"]["Placement"]
    assert placement["Constraints"] == ["node.role==manager"]
    backend.scheduler_node_label = "dask.scheduler"
    placement = backend.scheduler_service_spec(cluster, secrets)["task_template"]["Placement"]
    assert placement["Constraints"] == ["node.labels.dask.scheduler==true"]


async def test_one_worker_per_node_publishes_node_slot_port(backend):
    cluster, secrets = make_cluster(backend)
    worker = backend.db.create_worker(cluster)
    endpoint = backend.worker_service_spec(worker, secrets)["endpoint_spec"]
    assert endpoint == {"Mode": "dnsrr"}
    backend.one_worker_per_node_port = 8789
    endpoint = backend.worker_service_spec(worker, secrets)["endpoint_spec"]
    assert endpoint == {
        "Mode": "dnsrr",
        "Ports": [{"PublishedPort": 8789, "TargetPort": 8789, "Protocol": "tcp", "PublishMode": "host"}],
    }
    # The scheduler never holds the slot: it would keep a worker off its node.
    assert backend.scheduler_service_spec(cluster, secrets)["endpoint_spec"] == {"Mode": "dnsrr"}


async def test_cluster_filters_scope_by_gateway(backend):
    naming = backend.naming
    assert naming.gateway_filter() == {"label": ["dask-gateway-swarm.gateway=gw1"]}
    assert naming.cluster_filter("abc") == {
        "label": ["dask-gateway-swarm.gateway=gw1", "dask-gateway-swarm.cluster=abc"]
    }


async def test_live_objects_from_database(backend):
    live, _ = make_cluster(backend)
    dead, _ = make_cluster(backend)
    backend.db.update_cluster(dead, status=JobStatus.STOPPED, target=JobStatus.STOPPED)
    w_live = backend.db.create_worker(live)
    w_dead = backend.db.create_worker(live)
    backend.db.update_worker(w_dead, status=JobStatus.FAILED, target=JobStatus.FAILED)
    clusters, workers = backend.live_objects()
    assert clusters == {live.name}
    assert workers == {w_live.name}


async def test_global_worker_cap_counts_other_clusters(backend):
    a, _ = make_cluster(backend)
    b, _ = make_cluster(backend)
    backend.db.update_cluster(a, count=6)
    backend.db.update_cluster(b, count=3)
    assert backend.workers_available(b.name) is None  # no cap configured
    backend.max_total_workers = 10
    assert backend.workers_available(b.name) == 4
    assert backend.workers_available(a.name) == 7
    backend.db.update_cluster(a, target=JobStatus.STOPPED)
    assert backend.workers_available(b.name) == 10


async def test_upstream_limits_from_cores_and_memory(backend):
    cfg = SwarmClusterConfig(
        parent=backend,
        worker_cores=2,
        worker_memory=4 * GIB,
        scheduler_cores=1,
        scheduler_memory=1 * GIB,
        cluster_max_cores=9,
        cluster_max_memory=100 * GIB,
    )
    assert cfg.cluster_max_workers == 4  # (9 - 1) // 2
    cfg = SwarmClusterConfig(
        parent=backend,
        worker_memory=4 * GIB,
        scheduler_memory=1 * GIB,
        cluster_max_memory=9 * GIB,
        cluster_max_workers=5,
    )
    assert cfg.cluster_max_workers == 2  # (9 - 1) // 4


def test_encrypt_key_shape_for_persistent_db():
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    b = SwarmBackend(db_url="sqlite:////tmp/x.sqlite", db_encrypt_keys=[key])
    assert len(b.db_encrypt_keys) == 1
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Must configure `db_encrypt_keys`/`DASK_GATEWAY_ENCRYPT_KEYS` when not using an in-memory database"
        ),
    ):
        SwarmBackend(db_url="sqlite:////tmp/x.sqlite", db_encrypt_keys=[])


class FakeEngine:
    """Stands in for ``docker.APIClient``: records the calls, answers ``services``
    and ``tasks`` with canned ones."""

    def __init__(self, tasks, services=None, nodes=()):
        self.task_list = tasks
        self.node_list = list(nodes)
        self.service_list = [
            {"ID": s} for s in (services if services is not None else {t["ServiceID"] for t in tasks})
        ]
        self.calls = []

    def services(self, **kwargs):
        self.calls.append("services")
        return self.service_list

    def tasks(self, **kwargs):
        self.calls.append("tasks")
        return self.task_list

    def nodes(self, **kwargs):
        self.calls.append("nodes")
        return self.node_list


def use_engine(backend, engine):
    backend.swarm = SwarmClient(None, None, 1, lambda method, seconds: None, api=engine)


def task(service_id, state):
    return {"ID": f"task-{service_id}", "ServiceID": service_id, "Status": {"State": state}}


async def test_status_checks_are_one_bulk_query(backend):
    cluster, _ = make_cluster(backend)
    workers = [backend.db.create_worker(cluster) for _ in range(5)]
    states = {0: "running", 1: "pending", 2: "failed", 3: None, 4: "rejected"}
    for i, w in enumerate(workers):
        backend.db.update_worker(w, state={"service_id": f"svc{i}", "service_name": f"n{i}"})
    tasks = [task(f"svc{i}", s) for i, s in states.items() if s] + [task("other", "running")]
    fake = FakeEngine(tasks, services=[f"svc{i}" for i in range(5)])
    use_engine(backend, fake)
    result = await backend.do_check_workers(workers)
    # running/pending ok; failed/rejected not; no task yet (just created) ok
    assert result == [True, True, False, True, False]
    assert sorted(fake.calls) == ["services", "tasks"]
    # A service that is gone has failed, whatever its tasks said.
    fake.service_list = [{"ID": "svc1"}]
    assert await backend.do_check_workers(workers[:2]) == [False, True]


async def test_status_check_without_service_is_failed(backend):
    cluster, _ = make_cluster(backend)
    backend.db.update_cluster(cluster, state={})
    use_engine(backend, FakeEngine([]))
    assert await backend.do_check_clusters([cluster]) == [False]


def swarm_node(labels, cpus=2, memory=8 * GIB):
    return {
        "ID": "n1",
        "Spec": {"Role": "manager", "Labels": labels},
        "Description": {"Hostname": "n1", "Resources": {"NanoCPUs": int(cpus * 1e9), "MemoryBytes": memory}},
    }


@pytest.mark.parametrize(
    "msg, config, refusal",
    [
        ({"op": "scale", "count": 2}, {"node_pool": "gpu"},
         r"cannot get workers: no suitable node \(scheduling constraints not satisfied on 1 node\): "
         r"no node has node.labels.dask.worker==true and node.labels.dask.pool==gpu$"),
        ({"op": "adapt", "minimum": 0, "maximum": None}, {"worker_cores": 4},
         r"cannot get workers: no suitable node \(insufficient resources on 1 node\): each reserves 4 cores"),
    ],
    ids=["labels", "size"],
)
async def test_scale_no_node_could_serve_is_refused_with_the_reason(backend, msg, config, refusal):
    cluster, _ = make_cluster(backend, **config)
    backend.db.update_cluster(cluster, status=JobStatus.RUNNING, target=JobStatus.RUNNING)
    fake = FakeEngine([], nodes=[swarm_node({"dask.worker": "true"})])
    use_engine(backend, fake)
    with pytest.raises(PublicException, match=rf"^cluster {cluster.name} {refusal}"):
        await backend.forward_message_to_scheduler(cluster.to_model(), msg)
    assert fake.calls == ["nodes"]


@pytest.mark.parametrize(
    "msg",
    [{"op": "scale", "count": 0}, {"op": "adapt", "minimum": 0, "maximum": 0}, {"op": "adapt", "active": False}],
    ids=["scale-0", "adapt-max-0", "adapt-off"],
)
async def test_asking_for_no_workers_is_not_checked(backend, msg):
    cluster, _ = make_cluster(backend, node_pool="gpu")
    backend.db.update_cluster(cluster, status=JobStatus.RUNNING, target=JobStatus.RUNNING)
    fake = FakeEngine([], nodes=[swarm_node({"dask.worker": "true"})])
    use_engine(backend, fake)
    forwarded = []

    async def post(url, **kwargs):
        forwarded.append(kwargs["json"])

    backend.session = type("Session", (), {"post": staticmethod(post)})()
    await backend.forward_message_to_scheduler(cluster.to_model(), msg)
    assert forwarded == [msg]
    assert fake.calls == []


async def test_only_a_running_cluster_is_checked_and_a_failed_one_says_why(backend):
    cluster, _ = make_cluster(backend)
    fake = FakeEngine([], nodes=[])
    use_engine(backend, fake)
    # Not running yet: upstream's refusal, without asking Docker.
    with pytest.raises(PublicException, match="is not running$"):
        await backend.forward_message_to_scheduler(cluster.to_model(), {"op": "scale", "count": 2})
    assert fake.calls == []
    backend.db.update_cluster(cluster, status=JobStatus.FAILED, target=JobStatus.FAILED)
    backend.keep_failure_reason(cluster.name, "its worker w1 failed: Swarm cannot place it: no suitable node")
    with pytest.raises(
        PublicException,
        match=rf"^cluster {cluster.name} is not running: it failed: its worker w1 failed: Swarm cannot place it",
    ):
        await backend.forward_message_to_scheduler(cluster.to_model(), {"op": "scale", "count": 1})
