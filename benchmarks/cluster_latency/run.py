#!/usr/bin/env python
"""Cluster latency: the Swarm backend vs dask-gateway-server's local backend.

One run on one machine, N rounds (default 5). The backends take turns within
each round (Swarm, local, LocalCluster, then again), so a drift in the
machine's speed hits all of them alike, and each ratio is taken round by
round and reported as its median, min and max:

- new_cluster() until the cluster is ready (the call returns),
- scale(4) until 4 workers are connected,
- 10,000 tiny tasks through the gateway (client.map + gather),
- shutdown until every process has ended (Swarm: no running container with
  the cluster's labels) and until everything is gone (Swarm: no container
  with them at all; local: both are the cluster no longer being listed),

for the Swarm backend (gateway as a Swarm service from the image, as in the
integration tests) and for the local-process backend (UnsafeLocalBackend in a
dask-gateway-server subprocess); task throughput also against a plain
LocalCluster with 4 single-thread workers. Speed is measured, never asserted.

Usage: .venv/bin/python benchmarks/cluster_latency/run.py [--reps 5] [--json out.json]
"""

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateways  # noqa: E402
from clienthelpers import call, close_cluster, close_gateway  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from gateways import wait_until  # noqa: E402

N_WORKERS = 4
N_TASKS = 10_000
# Sized so 4 workers and the scheduler fit on a 2-core machine: Swarm
# reserves 0.25 core / 512 MiB per worker, each may use up to one core.
WORKER_OPTIONS = dict(worker_cores=0.25, worker_cores_limit=1, worker_memory="512 MiB")


def inc(x):
    return x + 1


def tiny_tasks(client):
    t0 = time.perf_counter()
    futures = client.map(inc, range(N_TASKS), pure=False)
    results = client.gather(futures)
    elapsed = time.perf_counter() - t0
    assert sum(results) == sum(range(1, N_TASKS + 1))
    del futures
    return elapsed


def one_gateway_round(target):
    """One create/scale/compute/shutdown cycle; returns its timings."""
    gw = Gateway(target.address, auth=BasicAuth("bench", target.password))
    cluster = client = None
    try:
        t0 = time.perf_counter()
        cluster = call(gw.new_cluster, shutdown_on_close=False, **target.options)
        t_new = time.perf_counter() - t0

        t0 = time.perf_counter()
        call(cluster.scale, N_WORKERS)
        client = call(cluster.get_client)
        call(client.wait_for_workers, N_WORKERS, timeout=120)
        t_scale = time.perf_counter() - t0

        t_tasks = call(tiny_tasks, client, timeout=300)
        call(client.close, timeout=30)
        client = None

        name = cluster.name
        t0 = time.perf_counter()
        c, cluster = cluster, None
        close_cluster(c, shutdown=True)
        wait_until(lambda: target.stopped(name), 120)
        t_stopped = time.perf_counter() - t0
        wait_until(lambda: target.gone(name), 120)
        t_gone = time.perf_counter() - t0
        return {"new_cluster": t_new, "scale4": t_scale, "tasks10k": t_tasks,
                "stopped": t_stopped, "shutdown": t_gone}
    finally:
        if client is not None:
            call(client.close, timeout=30)
        if cluster is not None:
            close_cluster(cluster, shutdown=True)
        close_gateway(gw)


# -- the two gateways -----------------------------------------------------------


@contextlib.contextmanager
def swarm_backend():
    with gateways.swarm_gateway(N_WORKERS, WORKER_OPTIONS) as target:
        yield lambda: one_gateway_round(target)


@contextlib.contextmanager
def local_backend():
    with gateways.local_gateway(N_WORKERS) as target:
        yield lambda: one_gateway_round(target)


# -- LocalCluster ---------------------------------------------------------------


def localcluster_round():
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        client.wait_for_workers(N_WORKERS, timeout=60)
        startup = time.perf_counter() - t0
        return {"startup": startup, "tasks10k": call(tiny_tasks, client, timeout=300)}
    finally:
        client.close()
        cluster.close()


@contextlib.contextmanager
def local_cluster():
    yield localcluster_round


# -- report ---------------------------------------------------------------------


def fmt_round(r):
    return ", ".join(f"{k} {v:.2f}s" for k, v in r.items())


def median(rounds, key):
    values = [r[key] for r in rounds if key in r]
    return statistics.median(values) if values else None


def ratios(results, a, b, key_a, key_b=None):
    """Round-by-round ratios results[a][i][key_a] / results[b][i][key_b]."""
    return [ra[key_a] / rb[key_b or key_a] for ra, rb in zip(results[a], results[b])
            if key_a in ra and (key_b or key_a) in rb and rb[key_b or key_a] > 0]


def spread(values):
    if not values:
        return "-"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def table(results):
    rows = [
        ("new_cluster() to ready", "new_cluster", "startup"),
        ("scale(4) to 4 workers", "scale4", None),
        ("10,000 tiny tasks", "tasks10k", "tasks10k"),
        ("shutdown to all stopped", "stopped", None),
        ("shutdown to all gone", "shutdown", None),
    ]
    cols = ["swarm", "local", "localcluster"]
    head = (f"{'median of %d (s)' % results['reps']:<26}{'Swarm backend':>15}{'local backend':>15}"
            f"{'LocalCluster':>14}   {'Swarm / local, per round: median (min-max)':<44}")
    lines = [head, "-" * len(head)]
    for label, key, lc_key in rows:
        vals = []
        for col in cols:
            k = lc_key if col == "localcluster" else key
            v = median(results[col], k) if (k and results.get(col)) else None
            vals.append("-" if v is None else f"{v:.2f}")
        ratio = spread(ratios(results, "swarm", "local", key))
        lines.append(f"{label:<26}{vals[0]:>15}{vals[1]:>15}{vals[2]:>14}   {ratio}")
    throughput = ratios(results, "localcluster", "swarm", "tasks10k")
    if throughput:
        lines.append(f"throughput Swarm / LocalCluster, per round: {spread(throughput)}")
    return "\n".join(lines)


FACTORIES = {"swarm": swarm_backend, "local": local_backend, "localcluster": local_cluster}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write raw timings to this file")
    parser.add_argument("--only", choices=list(FACTORIES), action="append")
    args = parser.parse_args()
    todo = [name for name in FACTORIES if name in (args.only or FACTORIES)]
    results = {"reps": args.reps, **{name: [] for name in FACTORIES}}
    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(FACTORIES[name]()) for name in todo}
        for i in range(args.reps):
            for name in todo:
                results[name].append(runners[name]())
                print(f"{name} round {i + 1}: {fmt_round(results[name][-1])}", file=sys.stderr)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
