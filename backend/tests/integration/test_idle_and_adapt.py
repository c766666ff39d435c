"""Idle clusters are stopped, and adaptive scaling stays under the gateway-wide cap.

Real swarm, real gateway, stock client. The module runs its own gateway
with a short idle timeout and a cap of two workers for everyone.
"""

import time

from clienthelpers import call, cluster_status, open_client, open_cluster, open_gateway, wait_for

IDLE_TIMEOUT = 10.0
MAX_TOTAL_WORKERS = 2
GATEWAY_SETTINGS = dict(idle_timeout=IDLE_TIMEOUT, max_total_workers=MAX_TOTAL_WORKERS)


def worker_services(client, gateway, cluster_name):
    return [s["Spec"]["Name"] for s in client.api.services(filters=gateway.cluster_filter(cluster_name, "worker"))]


def test_idle_cluster_is_stopped(gateway, report):
    with open_gateway(gateway) as gw:
        with open_cluster(gw) as cluster:
            name = cluster.name
            started = time.monotonic()
            # The scheduler checks every idle_timeout / 4; allow for its start.
            wait_for(
                lambda: cluster_status(gw, name) == "STOPPED",
                IDLE_TIMEOUT * 6,
                interval=1,
                message=f"idle cluster {name} to be stopped",
            )
            idle_for = time.monotonic() - started
        assert idle_for >= IDLE_TIMEOUT, f"stopped after {idle_for:.1f} s, before the idle timeout"
        report(f"idle cluster stopped {idle_for:.1f} s after it was ready")


def test_adaptive_scaling_is_clamped_by_the_cap_and_busy_clusters_stay(gateway, swarm):
    task_seconds = IDLE_TIMEOUT * 2.5
    with open_gateway(gateway) as gw:
        with open_cluster(gw) as cluster:
            name = cluster.name
            # Asks for up to 6 workers: 8 tasks of 25 s each keep it wanting more.
            call(cluster.adapt, minimum=0, maximum=6)
            with open_client(cluster) as client:
                futures = client.map(time.sleep, [task_seconds] * 8, pure=False)
                most = 0
                deadline = time.monotonic() + task_seconds * 2
                while time.monotonic() < deadline and not all(f.done() for f in futures):
                    most = max(most, len(worker_services(swarm, gateway, name)))
                    time.sleep(0.5)
                # Busy for longer than the idle timeout: still running.
                assert cluster_status(gw, name) == "RUNNING"
                assert most == MAX_TOTAL_WORKERS, (
                    f"cluster {name} had at most {most} worker services; "
                    f"the cap is {MAX_TOTAL_WORKERS} and adaptive scaling wants 6"
                )
                call(client.gather, futures, timeout=task_seconds * 4)
    logs = gateway.logs(tail=1000)
    assert (
        f"clamped to {MAX_TOTAL_WORKERS} by the gateway-wide limit of "
        f"{MAX_TOTAL_WORKERS} workers for all users"
    ) in logs, logs[-3000:]


def test_nothing_left_behind(gateway):
    left = wait_for(
        lambda: not any(gateway.backend_leftovers().values()) and gateway.backend_leftovers(),
        90,
        message="no service, secret or container with the backend's labels",
    )
    assert left == {"services": [], "secrets": [], "containers": []}
