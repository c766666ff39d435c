"""A real dask-gateway-server on 127.0.0.1 with UsersAuthenticator and limits.

The server runs from this Python environment with
``limits_backend.LocalLimitsBackend`` (upstream's local-process backend plus
``UserLimitsMixin``): schedulers and workers are local ``dask`` processes,
each with its working directory (and cwd) under ``<workdir>/clusters``.
"""

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import bcrypt
from dask_gateway import BasicAuth, Gateway

BIN = Path(sys.executable).parent
SERVER = BIN / "dask-gateway-server"
DASK = BIN / "dask"
HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
ADMINS = {"alice"}
# Cheap hashes: every new client session pays one check.
BCRYPT_ROUNDS = 6

CONFIG = """
c.DaskGateway.backend_class = "limits_backend.LocalLimitsBackend"
c.DaskGateway.authenticator_class = "dask_gateway_swarm.auth.UsersAuthenticator"
c.UsersAuthenticator.users_file = {users_file!r}
c.UsersAuthenticator.admin_users = {admins!r}
c.Proxy.address = "127.0.0.1:{port}"
c.LocalLimitsBackend.admin_users = {admins!r}
c.LocalLimitsBackend.clusters_directory = {clusters!r}
c.LocalLimitsBackend.cluster_heartbeat_period = 1
# Two cores run everything: a late heartbeat must not fail a cluster.
c.LocalLimitsBackend.cluster_heartbeat_timeout = 60
c.LocalLimitsBackend.check_timeouts_period = 5
c.LocalLimitsBackend.sigint_timeout = 3
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.worker_memory = "256 M"
c.ClusterConfig.scheduler_memory = "256 M"
c.ClusterConfig.adaptive_period = 0.5
c.ClusterConfig.idle_timeout = 0
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_users_file(path, users):
    hashes = {
        name: bcrypt.hashpw(
            PASSWORDS[name].encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)
        ).decode()
        for name in users
    }
    path.write_text(json.dumps(hashes), encoding="utf-8")
    os.chmod(path, 0o600)


class Server:
    def __init__(self, workdir, port, proc, log):
        self.workdir = workdir
        self.port = port
        self.proc = proc
        self.log = log
        self.address = f"http://127.0.0.1:{port}"
        self.clusters_dir = workdir / "clusters"

    def log_text(self):
        return self.log.read_text(errors="replace")

    def gateway(self, user, password=None):
        """An asynchronous stock client (no loop thread: no __del__ deadlock)."""
        if password is None:
            password = PASSWORDS.get(user, "")
        return Gateway(self.address, auth=BasicAuth(user, password), asynchronous=True)

    def worker_logs(self, cluster_name):
        """Workers the backend started for the cluster (one log file each)."""
        logs = self.clusters_dir / cluster_name / "logs"
        return sorted(p.name for p in logs.glob("worker-*.log")) if logs.exists() else []


def start_server(workdir, port=None, users=tuple(PASSWORDS), extra="", wait=True):
    """Start dask-gateway-server in ``workdir``; returns a ``Server``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    users_file = workdir / "gateway-users.json"
    write_users_file(users_file, users)
    text = CONFIG.format(
        users_file=str(users_file),
        admins=ADMINS,
        port=port,
        clusters=str(workdir / "clusters"),
        dask=str(DASK),
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]))
    log = workdir / f"server-{int(time.time() * 1000)}.log"
    proc = launch_server(workdir, text + extra, log, env)
    server = Server(workdir, port, proc, log)
    if wait:
        wait_healthy(server)
    return server


def launch_server(workdir, config_text, log, env=None):
    """Start dask-gateway-server with ``config_text`` in ``workdir``, in a session of its own."""
    config = workdir / "dask_gateway_config.py"
    config.write_text(config_text, encoding="utf-8")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(SERVER), "-f", str(config)],
            cwd=str(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def wait_until_healthy(address, proc, timeout=30, context=None):
    """Whether the gateway at ``address`` answers /api/health before ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(address + "/api/health", timeout=2, context=context) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop_process_group(proc, timeout=30):
    """SIGTERM the process group of ``proc`` (only what a test started), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_healthy(server, timeout=30):
    if not wait_until_healthy(server.address, server.proc, timeout):
        stop_server(server)
        raise RuntimeError("dask-gateway-server did not start:\n" + server.log_text()[-3000:])


def stop_server(server):
    stop_process_group(server.proc)


def kill_cluster_processes(clusters_dir):
    """Kill schedulers/workers left running (their cwd is under ``clusters_dir``).

    They run in their own sessions, so they outlive a killed gateway.
    """
    prefix = str(clusters_dir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------
# Client-side helpers (asynchronous client, every call under a timeout)


async def within(coro, timeout=30):
    return await asyncio.wait_for(coro, timeout)


async def raises(coro, timeout=30):
    """Run ``coro``, which must raise; return the exception.

    gc.collect() afterwards, on this (the only) thread: a refused call leaves
    a half-built GatewayCluster in a reference cycle.
    """
    try:
        await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise
    except Exception as exc:
        gc.collect()
        return exc
    raise AssertionError("expected an exception")


async def wait_status(gateway, name, statuses, timeout=40):
    deadline = time.monotonic() + timeout
    while True:
        report = await within(gateway.get_cluster(name))
        if report.status.name in statuses:
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster {name} is {report.status.name}, not {statuses}")
        await asyncio.sleep(0.3)


async def submit_running(gateway, timeout=60):
    name = await within(gateway.submit())
    await wait_status(gateway, name, {"RUNNING"}, timeout)
    return name


async def wait_for(predicate, timeout=30, period=0.3):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in %ss" % timeout)
        await asyncio.sleep(period)


async def stop_all_clusters(server, timeout=60):
    """As the admin: stop every cluster and wait until none is live."""
    async with server.gateway("alice") as admin:
        for report in await within(admin.list_clusters()):
            await within(admin.stop_cluster(report.name))
        deadline = time.monotonic() + timeout
        while await within(admin.list_clusters(status=["pending", "running", "stopping"])):
            if time.monotonic() > deadline:
                raise AssertionError("clusters still live")
            await asyncio.sleep(0.3)
