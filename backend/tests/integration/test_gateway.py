"""The stock dask_gateway client against a gateway running as a Swarm service.

Real Docker engine (single-node swarm), real image, real Dask: nothing mocked.
The tests of this module share one gateway (see conftest.GATEWAY_SETTINGS);
they run in file order, the last one checks that nothing was left behind.
"""

import json
import re
import secrets
import subprocess
import time
import warnings

import aiohttp
import pytest
from clienthelpers import (
    call,
    close_cluster,
    http_status,
    open_client,
    open_cluster,
    open_gateway,
    wait_for,
)
from dask_gateway import GatewayClusterError, GatewayWarning

import harness

GIB = 2**30


def cluster_objects(client, gateway, cluster_name):
    """Services, secrets and containers of one cluster, by our labels."""
    flt = gateway.cluster_filter(cluster_name)
    return {
        "services": [s["Spec"]["Name"] for s in client.api.services(filters=flt)],
        "secrets": [s.name for s in client.secrets.list(filters=flt)],
        "containers": [c["Names"][0] for c in client.api.containers(all=True, filters=flt)],
    }


def nothing_left(objects):
    return not any(objects.values())


def test_wrong_password_gets_401(gateway):
    url = f"{gateway.address}/api/v1/clusters/"
    assert http_status(url, ("alice", "not-the-password")) == 401
    assert http_status(url, ("alice", gateway.password)) == 200
    with open_gateway(gateway, password="not-the-password") as gw:
        # The stock client raises aiohttp's error for a 401 (resp.raise_for_status()).
        with pytest.raises(aiohttp.ClientResponseError, match=r"^401, message='Unauthorized', url='") as refused:
            call(gw.list_clusters, timeout=30)
        assert refused.value.status == 401


def test_core_path_compute_dashboard_secrets_shutdown(gateway, swarm):
    with open_gateway(gateway) as gw:
        with open_cluster(gw, shutdown=False) as cluster:
            name = cluster.name
            call(cluster.scale, 2)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 2, timeout=90)
                # A real computation with a known result.
                futures = client.map(lambda x: x * x, range(100))
                total = client.submit(sum, futures)
                assert call(total.result, timeout=60) == sum(x * x for x in range(100))
                # The scheduler advertises its service name on the fixed port.
                info = call(client.scheduler_info, timeout=30)
                assert info["address"] == f"tls://dask-{name}:8786"
                assert len(info["workers"]) == 2

            # The dashboard link, through the gateway's proxy.
            link = cluster.dashboard_link
            assert link.startswith(gateway.address)
            assert http_status(link) == 200

            # One scheduler and two worker services, each dnsrr, restart none.
            objects = cluster_objects(swarm, gateway, name)
            assert sorted(objects["services"])[0] == f"dask-{name}"
            assert len(objects["services"]) == 3
            assert len(objects["secrets"]) == 3
            inspect = subprocess.run(
                ["docker", "service", "inspect", *objects["services"]],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            for svc in json.loads(inspect):
                spec = svc["Spec"]
                assert spec["EndpointSpec"]["Mode"] == "dnsrr"
                assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
                env = dict(e.split("=", 1) for e in spec["TaskTemplate"]["ContainerSpec"]["Env"])
                assert env["DASK_GATEWAY_API_TOKEN"] == "/run/secrets/api-token"

            # Nothing secret in `docker service inspect`: the cluster's TLS
            # credentials (the client has them) and the API token file's
            # content (read from inside a container).
            cert = cluster.security.tls_cert
            key = cluster.security.tls_key
            scheduler_container = [c for c in objects["containers"] if "-w-" not in c][0]
            token = subprocess.run(
                ["docker", "exec", scheduler_container.lstrip("/"), "cat",
                 "/run/secrets/api-token"],
                check=True, stdout=subprocess.PIPE, text=True,
            ).stdout.strip()
            assert len(token) >= 32
            for secret in (token, _pem_body(cert), _pem_body(key)):
                assert secret not in inspect
            # Nor the gateway's password in the gateway's own service.
            gateway_inspect = subprocess.run(
                ["docker", "service", "inspect", gateway.name],
                check=True, stdout=subprocess.PIPE, text=True,
            ).stdout
            assert gateway.password not in gateway_inspect
            # Secret files: mode 0400, owned by the container user.
            modes = subprocess.run(
                ["docker", "exec", scheduler_container.lstrip("/"), "stat", "-c",
                 "%n %a %u", "/run/secrets/api-token", "/run/secrets/dask.crt",
                 "/run/secrets/dask.pem"],
                check=True, stdout=subprocess.PIPE, text=True,
            ).stdout.split("\n")
            for line in filter(None, modes):
                assert line.split()[1:] == ["400", "1000"], line

            # Shutdown: the scheduler, asked to close, closes its workers
            # and exits; each process ends by itself (exit code 0), none is
            # killed by Swarm; then nothing is left.
            since = time.time() - 1
            close_cluster(cluster, shutdown=True)
            wait_for(
                lambda: nothing_left(cluster_objects(swarm, gateway, name)),
                60,
                message=f"cluster {name} objects to be removed",
            )
            events = [
                (e["Action"], e["Actor"]["Attributes"])
                for e in swarm.events(
                    since=since,
                    until=time.time() + 1,
                    decode=True,
                    filters={"type": "container", "event": ["kill", "die"]},
                )
                if e["Actor"]["Attributes"].get("name", "").startswith(f"dask-{name}")
            ]
            assert [a for a, _ in events].count("die") == 3, events
            assert all(a == "die" and attrs["exitCode"] == "0" for a, attrs in events), events


def _pem_body(pem):
    lines = [ln for ln in pem.strip().splitlines() if not ln.startswith("-----")]
    return "".join(lines)[:64]


def test_options_honoured_and_no_capability_held_inside_the_cluster(gateway):
    # Defined here, it travels by value to the scheduler and the worker (a
    # function of this module would have to import there).
    def bounding_capabilities():
        """The capability bounding set of this process, as /proc shows it (hex)."""
        with open("/proc/self/status") as f:
            return next(line.split()[1] for line in f if line.startswith("CapBnd:"))

    with open_gateway(gateway) as gw:
        with open_cluster(
            gw,
            worker_cores=1,
            worker_cores_limit=1,
            worker_memory="1.5 GiB",
            environment={"MY_SETTING": "hello"},
        ) as cluster:
            call(cluster.scale, 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 1, timeout=90)

                def probe(dask_worker):
                    import os

                    import distributed.system

                    def read(path):
                        with open(path) as f:
                            return f.read().split()

                    if os.path.exists("/sys/fs/cgroup/cpu.max"):  # cgroup v2
                        quota, period = read("/sys/fs/cgroup/cpu.max")
                        cgroup_memory = int(read("/sys/fs/cgroup/memory.max")[0])
                    else:  # cgroup v1
                        quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")[0]
                        period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")[0]
                        cgroup_memory = int(
                            read("/sys/fs/cgroup/memory/memory.limit_in_bytes")[0]
                        )
                    return {
                        "nthreads": dask_worker.state.nthreads,
                        "memory_limit": dask_worker.memory_manager.memory_limit,
                        "cgroup_cpus": int(quota) / int(period),
                        "cgroup_memory": cgroup_memory,
                        "system_memory": distributed.system.MEMORY_LIMIT,
                        "env": os.environ.get("MY_SETTING"),
                        "uid": os.getuid(),
                        "capabilities": bounding_capabilities(),
                    }

                (result,) = call(client.run, probe, timeout=60).values()
                scheduler_capabilities = call(client.run_on_scheduler, bounding_capabilities, timeout=60)
    assert result == {
        "nthreads": 1,
        "memory_limit": int(1.5 * GIB),
        "cgroup_cpus": 1.0,
        "cgroup_memory": int(1.5 * GIB),
        "system_memory": int(1.5 * GIB),
        "env": "hello",
        "uid": 1000,
        "capabilities": "0000000000000000",
    }
    # Not even a root process of a user's image could gain one.
    assert scheduler_capabilities == "0000000000000000"


@pytest.mark.parametrize(
    "options, message",
    [
        # The limits are harness.DEFAULTS' (4 cores, 16 GiB per worker).
        ({"profile": "huge"}, "'huge' is not a valid option for profile"),
        (
            {"worker_memory": "banana"},
            "worker_memory: 'banana' is not a memory size (expected a size such as '512 MiB' or '8 GiB')",
        ),
        ({"worker_cores": 8}, "worker_cores must be <= 4.000000, got 8.0"),
        ({"worker_cores": 3, "worker_cores_limit": 2}, "worker_cores: 3 cores exceeds worker_cores_limit of 2"),
    ],
)
def test_bad_options_refused_at_new_cluster(gateway, options, message):
    with open_gateway(gateway) as gw:
        # gw.submit is the request new_cluster makes (POST /clusters/); it
        # builds no GatewayCluster object whose __del__ could hang the client.
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call(gw.submit, timeout=60, **options)
        # Nothing was created for the refused request.
        assert call(gw.list_clusters, timeout=30) == []


def test_cluster_and_global_worker_limits(gateway):
    with open_gateway(gateway) as gw:
        with open_cluster(gw) as first, open_cluster(gw) as second:
            # Upstream cluster_max_workers=3: a larger request is clamped.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call(first.scale, 5)
            assert any(
                issubclass(w.category, GatewayWarning)
                and str(w.message)
                == "Scale request of 5 workers would exceed resource limit of 3 workers. Scaling to 3 instead."
                for w in caught
            ), [str(w.message) for w in caught]
            with open_client(first) as client:
                call(client.wait_for_workers, 3, timeout=90)
            # Gateway-wide cap of 4 workers for everyone: 3 are in use (the
            # gateway created them, so it has seen the count).
            with pytest.raises(
                GatewayClusterError,
                match="^"
                + re.escape(
                    "Scale request of 2 workers exceeds the gateway-wide limit of 4 workers for all users (1 available)"
                )
                + "$",
            ):
                call(second.scale, 2)
            call(second.scale, 1)  # within the cap
            with open_client(second) as client:
                call(client.wait_for_workers, 1, timeout=90)
            names = {first.name, second.name}
        # A stopping cluster holds its workers against the cap until they are
        # gone: the next test starts once both clusters are stopped.
        wait_for(
            lambda: names <= {c.name for c in call(gw.list_clusters, status="stopped", timeout=30)},
            90,
            message="both clusters to stop",
        )


def test_restart_keeps_cluster_and_sweeps_orphans(gateway, swarm):
    with open_gateway(gateway) as gw:
        cluster = call(gw.new_cluster, shutdown_on_close=False, timeout=120)
        name = cluster.name
        call(cluster.scale, 1)
        with open_client(cluster) as client:
            call(client.wait_for_workers, 1, timeout=90)
            assert call(client.submit(lambda: 21 * 2).result, timeout=60) == 42
        close_cluster(cluster, shutdown=False)

    # Orphans: a service and a secret of this gateway for a cluster that
    # does not exist (as after a crash with an in-memory database). Named
    # like a cluster's, by a fresh name: Swarm names are engine-wide, and
    # another test run's orphans may exist at the same moment.
    orphan = secrets.token_hex(16)
    labels = {
        harness.GATEWAY_LABEL: gateway.gateway_id,
        f"{harness.LABEL_PREFIX}.cluster": orphan,
        f"{harness.LABEL_PREFIX}.role": "worker",
        f"{harness.LABEL_PREFIX}.worker": "f" * 32,
    }
    image_id = swarm.images.get(gateway.image).id
    swarm.services.create(
        image_id,
        command=["sleep", "600"],
        name=f"dask-{orphan}-w-ffffffff",
        labels=labels,
        container_labels=labels,
        endpoint_spec=None,
    )
    swarm.secrets.create(name=f"dask-{orphan}-api-token", data=b"x", labels=labels)
    assert not nothing_left(cluster_objects(swarm, gateway, orphan))

    gateway.restart()

    wait_for(
        lambda: nothing_left(cluster_objects(swarm, gateway, orphan)),
        60,
        message="orphaned service, secret and container to be swept",
    )
    # The running cluster survived, and the same client connects again by name.
    with open_gateway(gateway) as gw:
        assert [c.name for c in call(gw.list_clusters, timeout=30)] == [name]
        cluster = call(gw.connect, name, timeout=60)
        try:
            with open_client(cluster) as client:
                assert call(client.submit(lambda: 6 * 7).result, timeout=60) == 42
                assert len(call(client.scheduler_info, timeout=30)["workers"]) == 1
            call(cluster.scale, 2)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 2, timeout=90)
        finally:
            close_cluster(cluster, shutdown=True)
    wait_for(
        lambda: nothing_left(cluster_objects(swarm, gateway, name)),
        60,
        message=f"cluster {name} objects to be removed",
    )


def test_nothing_left_behind(gateway):
    with open_gateway(gateway) as gw:
        assert call(gw.list_clusters, timeout=30) == []
    left = wait_for(
        lambda: nothing_left(gateway.backend_leftovers()) and gateway.backend_leftovers(),
        60,
        message="no service, secret or container with the backend's labels",
    )
    assert left == {"services": [], "secrets": [], "containers": []}
