"""What Swarm cannot do is reported, not waited out; orphans go while the gateway runs.

Real swarm, real gateway, stock client. Each test prints how long detection
took; the bounds asserted are generous, well above the goals (speed is
measured in benchmarks/, never asserted here).
"""

import re
import secrets
import time

import pytest
from clienthelpers import call, cluster_status, open_cluster, open_gateway, wait_for
from dask_gateway import GatewayClusterError

import harness

SWEEP_PERIOD = 3.0
# Worker sizes up to far more cores than any node here has.
MAX_WORKER_CORES = 1024
# Heartbeats as the role deploys the gateway (upstream's 15 s): a dead
# scheduler must be noticed through Swarm, not when heartbeats stop (30 s).
GATEWAY_SETTINGS = dict(orphan_sweep_period=SWEEP_PERIOD, heartbeat=15, max_worker_cores=MAX_WORKER_CORES)
# Swarm's own words for a task no node may take.
NO_NODE = r"Swarm cannot place it: no suitable node \(scheduling constraints not satisfied on \d+ nodes?\)"
# ... and for one whose only eligible node takes no new tasks.
NODE_UNAVAILABLE = r"Swarm cannot place it: no suitable node \(1 node not available for new tasks\)"


def log_line(deployment, pattern):
    """The gateway's first log line matching ``pattern``, or None."""
    return next((line for line in deployment.logs(tail=500).splitlines() if re.search(pattern, line)), None)


@pytest.mark.parametrize(
    "options, reason",
    [
        # No node carries the arm64 pool's label.
        ({"node_pool": "arm64"}, r"no suitable node \(scheduling constraints not satisfied on 1 node\): "
         r"no node has node\.labels\.dask\.worker==true and node\.labels\.dask\.pool==arm64"),
        ({"worker_cores": MAX_WORKER_CORES, "worker_cores_limit": MAX_WORKER_CORES}, rf"no suitable node \(insufficient resources on 1 node\): "
         rf"each reserves {MAX_WORKER_CORES} cores and 768 MiB, and the node it may use has at most \d+ cores and [\d.]+ [GM]iB"),
    ],
    ids=["labels", "size"],
)
def test_a_scale_no_node_could_serve_is_refused_with_swarms_reason(gateway, swarm, options, reason, report):
    with open_gateway(gateway) as gw, open_cluster(gw, **options) as cluster:
        started = time.monotonic()
        with pytest.raises(GatewayClusterError, match=rf"^cluster {cluster.name} cannot get workers: {reason}$"):
            call(cluster.scale, 2)
        report(f"unplaceable scale refused after {time.monotonic() - started:.2f} s")
        assert log_line(gateway, rf"Refused to scale cluster {cluster.name}: {reason}")
        # Nothing was asked of Swarm.
        assert not swarm.api.services(filters=gateway.cluster_filter(cluster.name, role="worker"))


def test_a_worker_swarm_cannot_place_fails_and_is_not_replaced_forever(gateway, swarm, report):
    with open_gateway(gateway) as gw, open_cluster(gw, node_pool="arm64") as cluster, harness.unavailable_pool(
        swarm, "arm64"
    ):
        name = cluster.name
        started = time.monotonic()
        call(cluster.scale, 1)
        line = wait_for(
            lambda: log_line(gateway, rf"Worker \S+ of cluster {name} failed: {NODE_UNAVAILABLE}"),
            60,
            interval=1,
            message="the gateway to log why the worker cannot start",
        )
        report(f"unplaceable worker reported after {time.monotonic() - started:.1f} s: {line}")
        # Each such worker is a start failure: after worker_start_failure_limit
        # (upstream's 3) the cluster fails, instead of a new worker a minute forever.
        wait_for(lambda: cluster_status(gw, name) == "FAILED", 120, interval=1, message=f"cluster {name} to fail")
        report(f"cluster failed after {time.monotonic() - started:.1f} s")
        created = [line for line in gateway.logs(tail=500).splitlines() if re.search(rf"Created worker \S+ for cluster {name}", line)]
        assert 1 <= len(created) <= 3, created
        # The caller learns why from its next request.
        with pytest.raises(
            GatewayClusterError,
            match=rf"^cluster {name} is not running: it failed: its worker \S+ failed: {NODE_UNAVAILABLE}$",
        ):
            call(cluster.scale, 1)


def test_unplaceable_scheduler_is_reported_to_the_client(swarm, image, report):
    # Schedulers may run only on nodes labelled dask.nowhere=true: there are none.
    deployment = harness.GatewayDeployment(swarm, image, scheduler_node_label="dask.nowhere")
    try:
        deployment.deploy()
        with open_gateway(deployment) as gw:
            started = time.monotonic()
            with pytest.raises(GatewayClusterError, match=rf"^Cluster \S+ failed to start: {NO_NODE}$"):
                call(gw.new_cluster, shutdown_on_close=False, timeout=120)
            report(f"unplaceable scheduler reported to the client after {time.monotonic() - started:.1f} s")
        assert log_line(deployment, rf"Scheduler of cluster \S+ failed: {NO_NODE}")
    finally:
        deployment.remove()


def test_a_scheduler_waiting_for_capacity_says_so_and_its_timeout_names_it(swarm, image, report):
    # Each scheduler reserves more than half of the node's cores, so the
    # second cluster's scheduler waits for the first's: capacity that exists,
    # but is taken. It is not a failure until the start timeout, and then
    # the client's error says what it waited for.
    node_cores = max(node["Description"]["Resources"]["NanoCPUs"] for node in swarm.api.nodes()) / 1e9
    cores = round(node_cores * 0.6, 2)
    deployment = harness.GatewayDeployment(
        swarm, image, scheduler_cores=cores, scheduler_cores_limit=cores, cluster_start_timeout=20.0
    )
    waits = r"no suitable node \(insufficient resources on 1 node\)"
    try:
        deployment.deploy()
        with open_gateway(deployment) as gw, open_cluster(gw):
            started = time.monotonic()
            with pytest.raises(
                GatewayClusterError, match=rf"^Cluster \S+ failed to start: its scheduler waited for capacity: {waits}"
            ):
                call(gw.new_cluster, shutdown_on_close=False, timeout=120)
            report(f"scheduler that waited for capacity reported at its start timeout, after {time.monotonic() - started:.1f} s")
        assert log_line(deployment, rf"Scheduler of cluster \S+ waits for capacity: {waits}")
        assert not log_line(deployment, rf"Scheduler of cluster \S+ failed: {waits}"), "a wait for capacity was logged as a failure"
    finally:
        deployment.remove()


def kill_container(swarm, service):
    for task in swarm.api.tasks(filters={"service": service["ID"], "desired-state": "running"}):
        swarm.containers.get(task["Status"]["ContainerStatus"]["ContainerID"]).kill()


def remove_service(swarm, service):
    swarm.api.remove_service(service["ID"])


@pytest.mark.parametrize(
    "loss, reason",
    [
        (kill_container, r"its task ended failed: task: non-zero exit \(137\)"),
        (remove_service, r"its Swarm service was removed"),
    ],
    ids=["killed", "removed"],
)
def test_a_running_cluster_whose_scheduler_is_lost_fails(gateway, swarm, loss, reason, report):
    with open_gateway(gateway) as gw, open_cluster(gw) as cluster:
        name = cluster.name
        (scheduler,) = swarm.api.services(filters=gateway.cluster_filter(name, role="scheduler"))
        started = time.monotonic()
        loss(swarm, scheduler)
        wait_for(lambda: cluster_status(gw, name) == "FAILED", 25, interval=0.5, message=f"cluster {name} to fail")
        report(f"lost scheduler ({loss.__name__}) failed its cluster after {time.monotonic() - started:.1f} s")
        assert log_line(gateway, rf"Scheduler of running cluster {name} lost: {reason}")


def test_orphans_are_swept_while_the_gateway_runs(gateway, swarm, report):
    # A worker service of this gateway for a cluster that does not exist, as
    # a Docker error during a stop leaves behind.
    orphan = secrets.token_hex(16)
    labels = {
        harness.GATEWAY_LABEL: gateway.gateway_id,
        f"{harness.LABEL_PREFIX}.cluster": orphan,
        f"{harness.LABEL_PREFIX}.role": "worker",
        f"{harness.LABEL_PREFIX}.worker": secrets.token_hex(16),
    }
    service = swarm.services.create(
        swarm.images.get(gateway.image).id,
        command=["sleep", "600"],
        name=f"dask-{orphan}-w-{secrets.token_hex(4)}",
        labels=labels,
        container_labels=labels,
    )
    started = time.monotonic()
    wait_for(
        lambda: not swarm.api.services(filters=gateway.cluster_filter(orphan)),
        SWEEP_PERIOD * 10,
        interval=0.5,
        message=f"orphaned service {service.name} to be swept",
    )
    report(f"orphan swept after {time.monotonic() - started:.1f} s (sweep period {SWEEP_PERIOD} s)")


@pytest.mark.parametrize(
    "wanted, settings, refusal",
    [
        ("127.0.0.1:9/lab/no-such-image:1", {}, "is in no registry the fleet can reach and not on the gateway's node"),
        ("debian:bookworm", {"allowed_image_prefixes": ["registry.lab.example:5000/"]},
         "is not allowed here; images must come from registry.lab.example:5000/"),
    ],
    ids=["nowhere", "not-allowed"],
)
def test_an_image_no_node_could_run_is_refused_at_new_cluster(swarm, image, wanted, settings, refusal, report):
    deployment = harness.GatewayDeployment(swarm, image, **settings)
    try:
        deployment.deploy()
        with open_gateway(deployment) as gw:
            started = time.monotonic()
            with pytest.raises(ValueError, match=re.escape(f"image: {wanted} {refusal}")):
                call(gw.new_cluster, image=wanted, shutdown_on_close=False, timeout=120)
            report(f"image {wanted} refused after {time.monotonic() - started:.1f} s")
            assert call(gw.list_clusters) == []
        assert not swarm.services.list(filters={"label": f"{harness.GATEWAY_LABEL}={deployment.gateway_id}"})
    finally:
        deployment.remove()
