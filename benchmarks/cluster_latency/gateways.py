"""The two gateways the latency benchmarks compare, and what they cost.

- ``swarm_gateway``: the Swarm backend, deployed as the integration tests
  deploy it (``backend/tests/integration/harness.py``): a gateway service
  from the image on this engine's single-node swarm.
- ``local_gateway``: dask-gateway-server's own local-process backend
  (``UnsafeLocalBackend``) in a subprocess, running the venv's dask.

Both yield a ``Target`` record with the same fields, so a benchmark runs
the same client code against each. ``ProcessMeter`` measures the gateway's
own processes (dask-gateway-server and its proxy, not the clusters it
starts) and, apart, the container engine's daemons.
"""

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "backend" / "tests" / "integration"))
sys.path.insert(0, str(REPO / "backend" / "src"))

import harness  # noqa: E402
from clienthelpers import call, close_gateway  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402

# The engine's own processes, whose work the Swarm backend hands off.
ENGINE_PROCESSES = {"dockerd", "containerd"}


@dataclasses.dataclass
class Target:
    """A running gateway, as a benchmark sees it."""

    address: str
    password: str
    options: dict  # new_cluster() keywords that size the workers
    stopped: Callable[[str], bool]  # every process of cluster <name> has ended
    gone: Callable[[str], bool]  # and nothing of it is left
    processes: Callable[[], list]  # the gateway's own psutil.Process objects
    log_tail: Callable[[], list]  # the gateway's last log lines
    containers: Callable[..., list] = None  # Swarm: a cluster's containers (by role)
    network: str = None  # Swarm: the overlay network the gateway shares with clusters


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def _health(address):
    try:
        with urllib.request.urlopen(f"{address}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def process_tree(pid):
    """The process ``pid`` and all its descendants."""
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


# -- Swarm backend --------------------------------------------------------------


@contextlib.contextmanager
def swarm_gateway(max_workers, worker_options, **settings):
    """A gateway service on this engine's swarm (initialised here if needed)."""
    client = harness.docker_client()
    initialised = harness.ensure_swarm(client)
    previous = harness.ensure_node_label(client, harness.WORKER_NODE_LABEL)
    image = harness.build_image()
    deployment = harness.GatewayDeployment(
        client, image, run_id="bench-" + secrets.token_hex(3),
        cluster_max_workers=max_workers, **settings,
    )
    try:
        deployment.deploy()

        def containers(name, role=None, all=True):
            flt = deployment.cluster_filter(name, role)
            return client.api.containers(all=all, filters=flt)

        def processes():
            # The gateway's task container: its init, dask-gateway-server and
            # the proxy, seen from the host's PID namespace.
            (task,) = client.api.containers(
                filters={"label": f"com.docker.swarm.service.id={deployment.service}"})
            return process_tree(client.api.inspect_container(task["Id"])["State"]["Pid"])

        yield Target(
            address=deployment.address,
            password=deployment.password,
            options=worker_options,
            stopped=lambda name: not containers(name, all=False),
            gone=lambda name: not containers(name),
            processes=processes,
            log_tail=lambda: deployment.logs(tail=30).splitlines(),
            containers=containers,
            network=deployment.network,
        )
    finally:
        deployment.remove()
        if initialised:
            harness.leave_swarm(client)
        else:
            harness.restore_node_label(client, harness.WORKER_NODE_LABEL, previous)
        client.close()


# -- local-process backend ------------------------------------------------------

LOCAL_CONFIG = """\
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.DaskGateway.log_level = "WARN"
c.Proxy.address = "127.0.0.1:{port}"
c.Proxy.log_level = "warn"
c.UnsafeLocalBackend.cluster_heartbeat_period = 5
c.UnsafeLocalBackend.cluster_start_timeout = {start_timeout!r}
c.UnsafeLocalBackend.worker_start_timeout = {start_timeout!r}
c.LocalClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.LocalClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.LocalClusterConfig.worker_cores = 1
c.LocalClusterConfig.worker_memory = {worker_memory!r}
c.LocalClusterConfig.cluster_max_workers = {n}
"""


@contextlib.contextmanager
def local_gateway(max_workers, worker_memory="512 M", start_timeout=60.0):
    """dask-gateway-server with the local-process backend, in a subprocess."""
    tmp = tempfile.mkdtemp(prefix="dgs-bench-local-")
    port = harness.free_port()
    password = secrets.token_urlsafe(12)
    bindir = Path(sys.executable).parent
    Path(tmp, "config.py").write_text(LOCAL_CONFIG.format(
        password=password, port=port, dask=str(bindir / "dask"),
        worker_memory=worker_memory, n=max_workers, start_timeout=start_timeout))
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    with open(Path(tmp, "log"), "w") as log:
        proc = subprocess.Popen(
            [str(bindir / "dask-gateway-server"), "-f", "config.py"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True,
        )
    address = f"http://127.0.0.1:{port}"
    server = psutil.Process(proc.pid)

    def listed(name):
        gw = Gateway(address, auth=BasicAuth("bench", password))
        try:
            return any(c.name == name for c in call(gw.list_clusters))
        finally:
            close_gateway(gw)

    def processes():
        # The server and its proxy; the schedulers and workers it spawns are
        # the clusters', as the Swarm backend's containers are.
        return [server] + [p for p in server.children(recursive=True)
                           if p.name().startswith("dask-gateway-pr")]

    try:
        wait_until(lambda: _health(address), 60)
        yield Target(
            address=address,
            password=password,
            options={},
            stopped=lambda name: not listed(name),
            gone=lambda name: not listed(name),
            processes=processes,
            log_tail=lambda: Path(tmp, "log").read_text(encoding="utf-8").splitlines()[-30:],
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


# -- what it costs --------------------------------------------------------------


def engine_processes():
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ENGINE_PROCESSES]


def _cpu(process):
    try:
        t = process.cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return None


def _rss(processes):
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class ProcessMeter:
    """CPU seconds and peak resident memory of a fixed set of processes.

    CPU is the change in their user + system time between enter and exit;
    memory is the highest sum of their resident sets, sampled every
    ``interval`` seconds in a thread.
    """

    def __init__(self, processes, interval=0.1):
        self.processes = list(processes)
        self.interval = interval
        self.cpu_seconds = self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self):
        self._start = {p.pid: _cpu(p) for p in self.processes}
        self.peak_bytes = _rss(self.processes)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, _rss(self.processes))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.cpu_seconds = sum(
            end - self._start[p.pid] for p in self.processes
            if (end := _cpu(p)) is not None and self._start[p.pid] is not None)
        return False
