"""Client-side helpers: timeouts on blocking calls, close-once semantics."""

import base64
import contextlib
import gc
import threading
import time
import traceback
import urllib.error
import urllib.request

from dask_gateway import BasicAuth, Gateway


def call(func, *args, timeout=90, **kwargs):
    """Run a blocking client call with a timeout (the stock client can hang).

    A daemon thread, so a hung call cannot keep the interpreter from exiting.
    A refused call leaves a half-built GatewayCluster in a reference cycle,
    held by the traceback's frames. Freed later by the cycle collector on the
    client's loop thread, its ``__del__`` waits on that loop: the process
    deadlocks. So the frames are cleared and the cycle freed here.
    """
    result = {}

    def target():
        try:
            result["value"] = func(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(func, '__qualname__', func)} did not return in {timeout} s")
    if "error" in result:
        traceback.clear_frames(result["error"].__traceback__)
        gc.collect()
        raise result["error"]
    return result.get("value")


def _noop(*args, **kwargs):
    return None


def close_gateway(gw):
    """Close a Gateway once, for good.

    ``Gateway.close`` is not idempotent: a second call (from ``__del__``
    when the cycle collector frees the object) stops the client's event-loop
    runner again, which can stop the loop another live Gateway/cluster is
    using and deadlock the process. So ``close`` is disarmed after use.
    """
    try:
        call(gw.close, timeout=30)
    finally:
        gw.close = _noop


def close_cluster(cluster, shutdown=False):
    try:
        call(cluster.close, shutdown=shutdown, timeout=90)
    finally:
        cluster.gateway.close = _noop


@contextlib.contextmanager
def open_gateway(deployment, password=None, user="alice"):
    gw = Gateway(deployment.address, auth=BasicAuth(user, password or deployment.password))
    try:
        yield gw
    finally:
        close_gateway(gw)


@contextlib.contextmanager
def open_cluster(gw, shutdown=True, **options):
    cluster = call(gw.new_cluster, shutdown_on_close=False, timeout=120, **options)
    try:
        yield cluster
    finally:
        close_cluster(cluster, shutdown=shutdown)


@contextlib.contextmanager
def open_client(cluster):
    client = call(cluster.get_client, timeout=60)
    try:
        yield client
    finally:
        call(client.close, timeout=30)


def reporter(capsys):
    """A function that prints a line to the run's output even when the test
    passes (``-q`` captures print)."""

    def write(line):
        with capsys.disabled():
            print(f"\n  {line}")

    return write


def wait_for(predicate, timeout, interval=0.25, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def cluster_status(gw, name):
    """The status name (e.g. ``RUNNING``, ``FAILED``) of cluster ``name``, or None."""
    every = ["pending", "running", "stopping", "stopped", "failed"]
    clusters = {c.name: c.status.name for c in call(gw.list_clusters, status=every, timeout=30)}
    return clusters.get(name)


def http_status(url, auth=None, hub_token=None):
    """HTTP status of a GET, with basic auth ``(user, password)`` or a
    JupyterHub API token (as the client's ``JupyterHubAuth`` sends it) if given."""
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if hub_token:
        req.add_header("Authorization", f"jupyterhub {hub_token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def connect_and_compute(gateway, name, timeout=120):
    """Connect to running cluster ``name``, compute on one worker, shut it down."""
    cluster = call(gateway.connect, name, timeout=timeout)
    try:
        call(cluster.scale, 1)
        with open_client(cluster) as client:
            call(client.wait_for_workers, 1, timeout=180)
            assert call(client.submit(sum, range(10)).result) == 45
    finally:
        close_cluster(cluster, shutdown=True)
