#!/usr/bin/env python
"""Scale curve: how the Swarm backend grows, beside the local-process backend.

One run on one machine, the backends taking turns within each round:

- scale(N) for N = 1, 8, 32, 64 workers: time until all N are connected, and
  what the gateway's own processes (dask-gateway-server and its proxy) used
  meanwhile: CPU seconds and peak resident memory; for Swarm also the
  engine's (dockerd + containerd) CPU seconds, the work the backend hands off;
- N concurrent clusters of 1 worker each for N = 1, 8, 32: N users, one
  process each as on a lab's laptops, start at once; time until the last
  worker is connected, the slowest new_cluster(), the same costs, and how
  many users failed (no cluster, or no connected worker);
- Swarm only: task start latency with 0, 100 and 200 other services on the
  swarm (a bare service's task until running, and new_cluster() / scale(1)
  through the gateway), then 0 again once they are removed, as a check on
  the machine's drift;
- Swarm only: what one scheduler container uses, idle and busy, with 4 and
  with 32 workers.

Reservations are tiny (0.02 core, 256 MiB per worker and scheduler) so that
64 workers fit on a 2-core machine. Speed is measured here, never asserted.

Usage: .venv/bin/python benchmarks/cluster_latency/curve.py [--reps 2]
       [--sizes 1,8,32,64] [--clusters 1,8,32] [--services 0,100,200]
       [--only scale,concurrent,services,scheduler] [--json out.json]
       .venv/bin/python benchmarks/cluster_latency/curve.py --gateway URL
       --password-file FILE [--users 32] [--worker-cores 0.05]   # a deployed gateway
"""

import argparse
import contextlib
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dask  # noqa: E402
import gateways  # noqa: E402
import harness  # noqa: E402
from clienthelpers import call, close_cluster, close_gateway  # noqa: E402
from dask_gateway import BasicAuth, Gateway  # noqa: E402
from docker.types import ContainerSpec, EndpointSpec, NetworkAttachmentConfig  # noqa: E402
from docker.types import TaskTemplate  # noqa: E402
from gateways import ProcessMeter, engine_processes, wait_until  # noqa: E402

MAX_WORKERS = 64
MEMORY = "256 MiB"
SWARM_WORKERS = dict(worker_cores=0.02, worker_cores_limit=1, worker_memory=MEMORY)
SWARM_SETTINGS = dict(scheduler_cores=0.02, scheduler_memory="256 M")
# Dozens of processes importing dask at once on 2 cores take minutes; the
# curve measures how long, so neither backend's start timeout cuts it short.
START_TIMEOUT = 600.0
PASSWORD_ENV = "CURVE_GATEWAY_PASSWORD"
MiB = 2**20
# The controller's Python and the image's differ in the patch release only.
warnings.filterwarnings("ignore", message="Mismatched versions found")
# With dozens of processes starting on 2 cores a client's connection through
# the proxy can take longer than distributed's 30 s: a load artefact, not a
# failure of either backend, so both get more time.
dask.config.set({"distributed.comm.timeouts.connect": "120s"})


def inc(x):
    return x + 1


def wait_for_workers(client, n, timeout):
    # call()'s own timeout is the thread's; wait_for_workers gets its own.
    call(functools.partial(client.wait_for_workers, n, timeout=timeout), timeout=timeout + 60)


def costs(gateway_meter, engine_meter):
    return {"gateway_cpu": gateway_meter.cpu_seconds,
            "gateway_peak_mib": gateway_meter.peak_bytes / MiB,
            "engine_cpu": engine_meter.cpu_seconds}


@contextlib.contextmanager
def one_cluster(target):
    """A new cluster and its client, and how long new_cluster() took; once
    the block is done, the cluster is shut down and waited for until gone."""
    gw = Gateway(target.address, auth=BasicAuth("curve", target.password))
    try:
        t0 = time.perf_counter()
        cluster = call(gw.new_cluster, shutdown_on_close=False, timeout=300, **target.options)
        new_cluster_seconds = time.perf_counter() - t0
        client = call(cluster.get_client, timeout=120)
        yield cluster, client, new_cluster_seconds
        call(client.close, timeout=30)
        close_cluster(cluster, shutdown=True)
        wait_until(lambda: target.gone(cluster.name), 300, interval=0.5)
    finally:
        close_gateway(gw)


# -- scale(N) -------------------------------------------------------------------


def scale_round(target, n):
    with one_cluster(target) as (cluster, client, _):
        with ProcessMeter(target.processes()) as gm, ProcessMeter(engine_processes()) as em:
            t0 = time.perf_counter()
            call(cluster.scale, n)
            wait_for_workers(client, n, 900)
            seconds = time.perf_counter() - t0
    return {"seconds": seconds, **costs(gm, em)}


# -- N users at once ------------------------------------------------------------


def user_process(address, user, options):
    """One user: new_cluster, scale(1), until its worker is connected.

    Speaks to the parent by lines: "ready" once imported, then waits for
    "go"; prints its timings as JSON; waits for "stop", shuts down, exits.
    """
    gw = Gateway(address, auth=BasicAuth(user, os.environ[PASSWORD_ENV]))
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    cluster = client = None
    result = {"name": None}
    try:
        cluster = call(gw.new_cluster, shutdown_on_close=False, timeout=START_TIMEOUT + 60,
                       **options)
        result.update(name=cluster.name, new_cluster=time.perf_counter() - t0)
        call(cluster.scale, 1)
        client = call(cluster.get_client, timeout=120)
        wait_for_workers(client, 1, START_TIMEOUT)
        result["connected"] = time.perf_counter() - t0
    except Exception as exc:  # reported, counted by the parent
        result["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result), flush=True)
    sys.stdin.readline()
    if client is not None:
        call(client.close, timeout=30)
    if cluster is not None:
        close_cluster(cluster, shutdown=True)
    close_gateway(gw)


def concurrent_round(target, n, users=None):
    """N users at once; their own results are appended to ``users`` if given."""
    env = dict(os.environ, **{PASSWORD_ENV: target.password})
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--user", target.address, f"user{i:02d}",
         json.dumps(target.options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    ) for i in range(n)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        with ProcessMeter(target.processes()) as gm, ProcessMeter(engine_processes()) as em:
            t0 = time.perf_counter()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            users = [] if users is None else users
            users += [json.loads(p.stdout.readline()) for p in procs]
            seconds = time.perf_counter() - t0
        for p in procs:
            p.stdin.write("stop\n")
            p.stdin.flush()
        for p in procs:
            p.wait(300)
        for u in users:
            if u["name"]:
                wait_until(lambda: target.gone(u["name"]), 300, interval=0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    failures = [u for u in users if "error" in u]
    for u in failures:
        what = "got no cluster" if "new_cluster" not in u else "got no connected worker"
        print(f"  a user {what}: {u['error']}", file=sys.stderr)
    return {"seconds": seconds, "failed": len(failures),
            "slowest_new_cluster": max((u["new_cluster"] for u in users if "new_cluster" in u),
                                       default=float("nan")),
            **costs(gm, em)}


def users_at_once(args):
    """N users against a deployed gateway: each user's times, and the total."""
    if not args.password_file:
        sys.exit("curve.py: --gateway needs --password-file")
    with open(args.password_file, encoding="utf-8") as f:
        password = f.read().strip()
    target = gateways.Target(
        address=args.gateway, password=password,
        options={"worker_cores": args.worker_cores, "worker_memory": args.worker_memory},
        # The users shut their clusters down; what the gateway uses is not
        # measured from here.
        stopped=lambda name: True, gone=lambda name: True,
        processes=lambda: [], log_tail=lambda: [],
    )
    users = []
    result = concurrent_round(target, args.users, users)
    print(f"{'user':<10}{'new_cluster() s':>17}{'worker connected s':>20}  error")
    for i, u in enumerate(users):
        print(f"user{i:02d}    {u.get('new_cluster', float('nan')):>17.1f}"
              f"{u.get('connected', float('nan')):>20.1f}  {u.get('error', '')}")
    print(f"{args.users} users at once: {args.users - result['failed']} got a running cluster"
          f" and a connected worker, the last after {result['seconds']:.1f} s; slowest"
          f" new_cluster() {result['slowest_new_cluster']:.1f} s; {result['failed']} failed")
    return 1 if result["failed"] else 0


# -- Swarm: start latency beside other services ---------------------------------


class Fillers:
    """Other services on the swarm: one task each, sleeping, on their own network."""

    LABEL = f"{harness.LABEL_PREFIX}.bench-filler"

    def __init__(self, client, image_id):
        self.client = client
        self.image_id = image_id
        self.network = f"bench-fillers-{secrets.token_hex(3)}"
        client.networks.create(self.network, driver="overlay", scope="swarm",
                               labels={self.LABEL: "true"})

    def services(self):
        return self.client.api.services(filters={"label": f"{self.LABEL}=true"})

    def resize(self, count):
        have = self.services()
        for s in have[count:]:
            self.client.api.remove_service(s["ID"])
        for i in range(len(have), count):
            self.client.api.create_service(
                TaskTemplate(ContainerSpec(self.image_id, command=["sleep", "infinity"],
                                           labels={self.LABEL: "true"}),
                             networks=[NetworkAttachmentConfig(self.network)]),
                name=f"{self.network}-{i:03d}", labels={self.LABEL: "true"},
                endpoint_spec=EndpointSpec(mode="dnsrr"))
        wait_until(lambda: self.running() == count, 900, interval=1)

    def running(self):
        flt = {"label": f"{self.LABEL}=true", "desired-state": "running"}
        tasks = self.client.api.tasks(filters=flt)
        return sum(t["Status"]["State"] == "running" for t in tasks)

    def remove(self):
        self.resize(0)
        wait_until(lambda: not self.client.api.containers(
            all=True, filters={"label": f"{self.LABEL}=true"}), 300, interval=0.5)
        harness._retry(lambda: self.client.networks.get(self.network).remove(), 120)


def bare_task_start(client, image_id, network):
    """Seconds from creating a one-task service until its task is running."""
    t0 = time.perf_counter()
    service = client.api.create_service(
        TaskTemplate(ContainerSpec(image_id, command=["sleep", "infinity"]),
                     networks=[NetworkAttachmentConfig(network)]),
        name=f"bench-probe-{secrets.token_hex(3)}", endpoint_spec=EndpointSpec(mode="dnsrr"))
    try:
        wait_until(lambda: any(t["Status"]["State"] == "running" for t in client.api.tasks(
            filters={"service": service["ID"]})), 300, interval=0.05)
        return time.perf_counter() - t0
    finally:
        client.api.remove_service(service["ID"])


def gateway_start(target):
    with one_cluster(target) as (cluster, client, t_new):
        t0 = time.perf_counter()
        call(cluster.scale, 1)
        wait_for_workers(client, 1, 300)
        t_scale = time.perf_counter() - t0
    return {"new_cluster": t_new, "scale1": t_scale}


def services_curve(target, counts, reps):
    client = harness.docker_client()
    image_id = client.images.get(harness.build_image()).id
    fillers = Fillers(client, image_id)
    rows = []
    try:
        # Up, then back to the first count: the last row shows the drift.
        for k, count in enumerate(list(counts) + [counts[0]]):
            t0 = time.perf_counter()
            fillers.resize(count)
            print(f"services: {count} others running ({time.perf_counter() - t0:.0f} s to get"
                  " there)", file=sys.stderr)
            for _ in range(reps):
                row = {"services": f"{count} (again)" if k == len(counts) else str(count),
                       "bare_task": bare_task_start(client, image_id, target.network),
                       **gateway_start(target)}
                print(f"  {fmt(row)}", file=sys.stderr)
                rows.append(row)
    finally:
        fillers.remove()
        client.close()
    return rows


# -- Swarm: one scheduler container ---------------------------------------------


def scheduler_use(target, worker_counts=(4, 32), idle_seconds=20, busy_tasks=10_000):
    rows = []
    with one_cluster(target) as (cluster, client, _):
        (container,) = target.containers(cluster.name, "scheduler", all=False)
        docker = harness.docker_client()
        try:
            pid = docker.api.inspect_container(container["Id"])["State"]["Pid"]
        finally:
            docker.close()
        processes = gateways.process_tree(pid)
        for n in worker_counts:
            call(cluster.scale, n)
            wait_for_workers(client, n, 600)
            time.sleep(5)  # let the joins settle
            with ProcessMeter(processes) as idle:
                time.sleep(idle_seconds)
            rows.append({"state": f"idle, {n} workers", "cores": idle.cpu_seconds / idle_seconds,
                         "peak_mib": idle.peak_bytes / MiB})
            with ProcessMeter(processes) as busy:
                t0 = time.perf_counter()
                futures = client.map(inc, range(busy_tasks), pure=False)
                call(client.gather, futures, timeout=600)
                elapsed = time.perf_counter() - t0
                del futures
            rows.append({"state": f"busy, {n} workers ({busy_tasks} tasks, {elapsed:.0f} s)",
                         "cores": busy.cpu_seconds / elapsed, "peak_mib": busy.peak_bytes / MiB})
            print(f"scheduler: {fmt(rows[-2])}; {fmt(rows[-1])}", file=sys.stderr)
    return rows


def guarded(one_round, target, n):
    """A round's result, or its error: one failed round does not end the run."""
    try:
        return one_round(target, n)
    except Exception as exc:  # reported in the table as a failed round
        print(f"round failed: {type(exc).__name__}: {exc}; the gateway's last log lines:",
              *target.log_tail(), sep="\n  ", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- report ---------------------------------------------------------------------


def fmt(row):
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in row.items())


def med(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def failed(rows):
    return sum("error" in r for r in rows)


def curve_table(title, results, sizes, extra=()):
    """One line per N: each backend's median time and costs, and the ratio."""
    head = (f"{title:<20}{'Swarm s':>9}{'local s':>9}{'Swarm / local':>22}"
            f"{'gw CPU s':>14}{'gw peak MiB':>14}{'engine CPU s':>14}"
            + "".join(f"{label:>14}" for label, _ in extra) + f"{'failed rounds':>15}")
    lines = [head, "-" * len(head)]
    for n in sizes:
        sw, lo = results["swarm"].get(n, []), results["local"].get(n, [])
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(sw, lo)
                  if "seconds" in a and "seconds" in b]
        ratio = (f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                 if ratios else "-")
        lines.append(
            f"{'N = %d' % n:<20}{med(sw, 'seconds'):>9.2f}{med(lo, 'seconds'):>9.2f}{ratio:>22}"
            f"{med(sw, 'gateway_cpu'):>7.1f} /{med(lo, 'gateway_cpu'):>5.1f}"
            f"{med(sw, 'gateway_peak_mib'):>7.0f} /{med(lo, 'gateway_peak_mib'):>5.0f}"
            f"{med(sw, 'engine_cpu'):>7.1f} /{med(lo, 'engine_cpu'):>5.1f}"
            + "".join(f"{med(sw, key):>7.1f} /{med(lo, key):>5.1f}" for _, key in extra)
            + f"{failed(sw):>8} /{failed(lo):>5}")
    lines.append("(cost columns: Swarm / local, medians; ratio: Swarm / local per round,"
                 " median (min-max))")
    return "\n".join(lines)


def services_table(rows):
    head = (f"{'other services':<20}{'bare task running s':>21}{'new_cluster() s':>17}"
            f"{'scale(1) s':>12}")
    lines = [head, "-" * len(head)]
    for label in dict.fromkeys(r["services"] for r in rows):
        group = [r for r in rows if r["services"] == label]
        lines.append(f"{label:<20}{med(group, 'bare_task'):>21.2f}"
                     f"{med(group, 'new_cluster'):>17.2f}{med(group, 'scale1'):>12.2f}")
    return "\n".join(lines)


def scheduler_table(rows):
    head = f"{'one scheduler':<44}{'cores used':>12}{'peak MiB':>10}"
    lines = [head, "-" * len(head)]
    lines += [f"{r['state']:<44}{r['cores']:>12.3f}{r['peak_mib']:>10.0f}" for r in rows]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------

PARTS = ("scale", "concurrent", "services", "scheduler")


def ints(text):
    return [int(x) for x in text.split(",") if x]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--sizes", type=ints, default=[1, 8, 32, 64])
    parser.add_argument("--clusters", type=ints, default=[1, 8, 32])
    parser.add_argument("--services", type=ints, default=[0, 100, 200])
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(PARTS))
    parser.add_argument("--json", help="also write raw results to this file")
    parser.add_argument("--user", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--gateway", metavar="URL",
                        help="only run --users users at once against this gateway (e.g. the"
                             " sandbox's); its CA, if any, from SSL_CERT_FILE")
    parser.add_argument("--password-file", help="with --gateway: the gateway's password")
    parser.add_argument("--users", type=int, default=32, help="with --gateway (32)")
    parser.add_argument("--worker-cores", type=float, default=0.05, help="with --gateway (0.05)")
    parser.add_argument("--worker-memory", default="512 MiB", help="with --gateway (512 MiB)")
    args = parser.parse_args()
    if args.user:
        address, user, options = args.user
        return user_process(address, user, json.loads(options))
    if args.gateway:
        sys.exit(users_at_once(args))

    results = {"scale": {"swarm": {}, "local": {}}, "concurrent": {"swarm": {}, "local": {}}}
    with contextlib.ExitStack() as stack:
        targets = {
            "swarm": stack.enter_context(gateways.swarm_gateway(
                MAX_WORKERS, SWARM_WORKERS, cluster_start_timeout=START_TIMEOUT,
                worker_start_timeout=START_TIMEOUT, **SWARM_SETTINGS)),
        }
        if {"scale", "concurrent"} & set(args.only):
            targets["local"] = stack.enter_context(gateways.local_gateway(
                MAX_WORKERS, worker_memory="256 M", start_timeout=START_TIMEOUT))
        for part, sizes, one_round in (("scale", args.sizes, scale_round),
                                       ("concurrent", args.clusters, concurrent_round)):
            if part not in args.only:
                continue
            for i in range(args.reps):
                for n in sizes:
                    for name in ("swarm", "local"):
                        r = guarded(one_round, targets[name], n)
                        results[part][name].setdefault(n, []).append(r)
                        print(f"{part} round {i + 1}, N = {n}, {name}: {fmt(r)}", file=sys.stderr)
        if "services" in args.only:
            results["services"] = services_curve(targets["swarm"], args.services, args.reps)
        if "scheduler" in args.only:
            results["scheduler"] = scheduler_use(targets["swarm"])

    out = []
    if "scale" in args.only:
        out.append(curve_table("scale(N) workers", results["scale"], args.sizes))
    if "concurrent" in args.only:
        out.append(curve_table("N clusters at once", results["concurrent"], args.clusters,
                               extra=[("slowest new s", "slowest_new_cluster"),
                                      ("users failed", "failed")]))
    if "services" in args.only:
        out.append(services_table(results["services"]))
    if "scheduler" in args.only:
        out.append(scheduler_table(results["scheduler"]))
    print("\n\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
