#!/usr/bin/env python
"""Image distribution: how the Dask image reaches a fleet of 3 and of 9 nodes.

For each fleet size, a fresh sandbox fleet (the Molecule node definition,
as `make demo` makes it: one manager, N-1 workers) gets Docker and the
swarm, untimed. Then the registry and image stages (`playbooks/gateway.yml
--tags image`, the plays `site.yml` runs) are timed twice: the first run
(registry up, the image built on one node, pushed, every node pulls it by
digest) and a rerun (nothing to move). The fleets take turns: 3, 9, then the
reruns 3, 9, so a drift in the machine's speed hits both alike.

Reported per run: wall time; the pull phase (first start to last end of the
pull task over the nodes, from Ansible's json callback) and the share of the
machine's cores that were busy during it (/proc/stat, sampled twice a
second: all nodes share this machine's cores, so a pull phase near 100% busy
is bound by the cores, not by the design); the slowest tasks; and the bytes the
controller's processes wrote (wchar of ansible-playbook and every process
it started, reaped: the build context, module payloads and anything else
that left the controller, counted at least once). Speed is measured, never
asserted. The controller's wheel cache is filled first, untimed (the first
run on a fresh controller also downloads the wheels: the same for any fleet
size).

With --node-cpus C every node container of every fleet gets C cores
(`docker update --cpus`, after the untimed set-up), so each node works in a
slice of its own, as a real fleet's nodes do on cores of their own, and 9
nodes no longer queue for the cores 3 nodes had to themselves. The limit
binds each node's systemd, engine and pulls; the containers its engine
starts (builds, the registry) sit in the host's /docker cgroup, through the
shared cgroup tree, so they are outside it. Keep C times the largest size
below the machine's cores, to leave the controller some.

Usage: .venv/bin/python benchmarks/image_distribution/run.py [--sizes 3 9] [--node-cpus C] [--json out.json]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RESOURCES = REPO / "extensions" / "molecule" / "resources"
BIN = Path(sys.executable).parent
BASE_IMAGE = "debian:bookworm"
FLEET_LABEL = yaml.safe_load((RESOURCES / "node.yml").read_text())["fleet_label_fleet"]


def written_bytes():
    """Bytes this process and its reaped descendants have written (any file, pipe or socket)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


class CpuSampler:
    """Samples the host's busy CPU share (/proc/stat) twice a second, to tell
    whether a phase was bound by the machine's cores rather than by waiting."""

    def __init__(self):
        self.samples = []  # (epoch seconds, busy jiffies, total jiffies)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.samples.append((time.time(), sum(fields) - idle, sum(fields)))
            self._stop.wait(0.5)

    def busy_share(self, start, end):
        """Busy share of all cores between two epoch times (nan if unsampled)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (_, busy0, total0), (_, busy1, total1) = inside[0], inside[-1]
        return (busy1 - busy0) / max(total1 - total0, 1)


def playbook(*args, env=None, capture=False):
    cmd = [str(BIN / "ansible-playbook"), *map(str, args)]
    run_env = dict(os.environ, ANSIBLE_NOCOLOR="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, text=True, capture_output=capture)
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-3000:] if capture else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{tail}")
    return proc


class Fleet:
    """A sandbox fleet of its own (name, inventory, password files), apart from `make demo`'s."""

    def __init__(self, size, workdir, node_cpus):
        self.size = size
        self.node_cpus = node_cpus
        self.name = f"dask-swarm-bench-{size}"
        self.dir = Path(workdir) / self.name
        self.inventory = self.dir / "inventory"
        (self.inventory / "group_vars").mkdir(parents=True)
        # The sandbox's own variables (one source of truth), but this fleet's
        # files: group_vars/all.yml outranks the inventory's own `all` vars,
        # and two fleets sharing the sandbox's files would each rewrite them.
        sandbox = yaml.safe_load((REPO / "inventories" / "sandbox" / "group_vars" / "all.yml").read_text())
        sandbox.update(self.files())
        (self.inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(sandbox))

    def files(self):
        """The controller-side files of this fleet (passwords, CA certificates)."""
        return {
            "registry_password_file": str(self.dir / "registry.password"),
            "registry_ca_file": str(self.dir / "registry-ca.crt"),
            "gateway_password_file": str(self.dir / "gateway.password"),
            "gateway_ca_file": str(self.dir / "gateway-ca.crt"),
        }

    def nodes_file(self, base_archive):
        nodes = [{"name": "manager1", "hostname": f"{self.name}-manager1", "groups": ["swarm_managers"]}]
        nodes += [
            {"name": f"worker{i}", "hostname": f"{self.name}-worker{i}", "groups": ["swarm_workers"]}
            for i in range(1, self.size)
        ]
        data = {
            "fleet_nodes": nodes,
            "fleet_inventory_vars": {
                "dask_image_base_image_archive": str(base_archive),
                "registry_base_image_archive": str(base_archive),
            },
        }
        path = self.dir / "nodes.yml"
        path.write_text(json.dumps(data))
        return path

    def create(self, base_archive):
        playbook(RESOURCES / "create.yml", "-e", f"fleet_name={self.name}", "-e", f"@{self.nodes_file(base_archive)}",
                 "-e", f"fleet_inventory_file={self.inventory / 'hosts.yml'}", "-e", f"fleet_base_image_archive={base_archive}")
        playbook("playbooks/swarm.yml", "-i", self.inventory)
        if self.node_cpus:
            containers = subprocess.check_output(
                ["docker", "ps", "-q", "--filter", f"label={FLEET_LABEL}={self.name}"], text=True).split()
            subprocess.run(["docker", "update", "--cpus", str(self.node_cpus), *containers], check=True, stdout=subprocess.DEVNULL)

    def destroy(self):
        playbook(RESOURCES / "destroy.yml", "-e", f"fleet_name={self.name}",
                 "-e", f"fleet_inventory_file={self.inventory / 'hosts.yml'}")

    def image_stage(self):
        """Time the registry and image plays; return wall time, pull phase and bytes written."""
        before, started = written_bytes(), time.monotonic()
        with CpuSampler() as cpu:
            proc = playbook("playbooks/gateway.yml", "-i", self.inventory, "--tags", "image",
                            env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}, capture=True)
        wall = time.monotonic() - started
        written = written_bytes() - before
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
        changed = sum(host["changed"] for host in result["stats"].values())
        pull_start, pull_end = pull_phase(result)
        return {"wall_s": wall, "pull_s": pull_end - pull_start, "pull_cpu_busy": cpu.busy_share(pull_start, pull_end),
                "controller_bytes": written, "changed": changed,
                "changed_tasks": changed_tasks(result), "slowest_tasks": slowest_tasks(result)}


def changed_tasks(result):
    """'host: task' for every task result that reported a change (a rerun should have none)."""
    return sorted(f"{host}: {task['task']['name']}"
                  for task in tasks(result) for host, outcome in task["hosts"].items() if outcome.get("changed"))


def task_span(task):
    """A task's start and end over all its hosts, in epoch seconds (the json
    callback's times are UTC); None for a task that did not end."""
    duration = task["task"]["duration"]
    if "end" not in duration:
        return None
    return tuple(datetime.fromisoformat(duration[key].rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
                 for key in ("start", "end"))


def tasks(result):
    return [task for play in result["plays"] for task in play["tasks"]]


def slowest_tasks(result, count=8):
    """The tasks that took longest (start to end over all their hosts), as (seconds, name)."""
    spans = [(round(span[1] - span[0], 1), task["task"]["name"])
             for task in tasks(result) if (span := task_span(task))]
    return sorted(spans, reverse=True)[:count]


def pull_phase(result):
    """First start and last end of 'Pull the image on every node' (the task, over all nodes)."""
    # Role tasks are named "<role> : <task>" in the callback's output.
    spans = [task_span(task) for task in tasks(result)
             if task["task"]["name"].rpartition(" : ")[2] == "Pull the image on every node"]
    spans = [span for span in spans if span]
    if not spans:
        return float("nan"), float("nan")
    return min(start for start, _ in spans), max(end for _, end in spans)


def fill_wheelhouse():
    """Download the x86_64 wheels into the dask_image role's controller cache, as its first build would."""
    cache = Path(yaml.safe_load((REPO / "roles" / "dask_image" / "defaults" / "main.yml").read_text())
                 ["dask_image_controller_cache"]).expanduser()
    subprocess.run([str(REPO / "image" / "build.sh"), "--arch", "x86_64", "--download-only",
                    "--python", sys.executable, "--wheelhouse", str(cache / "wheelhouse" / "x86_64")],
                   check=True, stdout=subprocess.DEVNULL)


def base_archive(workdir):
    path = Path(workdir) / "base-image.tar"
    subprocess.run(["docker", "image", "save", "-o", str(path), BASE_IMAGE], check=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 9])
    parser.add_argument("--node-cpus", type=float, default=0, help="cores per node container (0: no limit)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.node_cpus * max(args.sizes) >= os.cpu_count():
        parser.error(f"--node-cpus {args.node_cpus} x {max(args.sizes)} nodes leaves none of the {os.cpu_count()} cores to the controller")
    workdir = tempfile.mkdtemp(prefix="image-distribution.")
    fleets = [Fleet(size, workdir, args.node_cpus) for size in args.sizes]
    rows = {fleet.size: {} for fleet in fleets}
    try:
        fill_wheelhouse()
        archive = base_archive(workdir)
        for fleet in fleets:
            print(f"==> fleet of {fleet.size}: creating (untimed)", flush=True)
            fleet.create(archive)
        for run in ("first", "rerun"):
            for fleet in fleets:
                print(f"==> fleet of {fleet.size}: {run} run of the registry and image stages", flush=True)
                rows[fleet.size][run] = fleet.image_stage()
    finally:
        for fleet in fleets:
            fleet.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"cores per node: {args.node_cpus or 'no limit'} (the machine has {os.cpu_count()})")
    print("| nodes | first run s | pull phase s | CPU busy in pull | controller bytes (MB) "
          "| rerun s | rerun changed | rerun bytes (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, row in rows.items():
        first, rerun = row["first"], row["rerun"]
        print(f"| {size} | {first['wall_s']:.0f} | {first['pull_s']:.0f} | {first['pull_cpu_busy']:.0%} "
              f"| {first['controller_bytes'] / 1e6:.0f} "
              f"| {rerun['wall_s']:.0f} | {rerun['changed']} | {rerun['controller_bytes'] / 1e6:.0f} |")
    for size, row in rows.items():
        for line in row["rerun"]["changed_tasks"]:
            print(f"changed on the rerun of {size} nodes: {line}")
    for size, row in rows.items():
        for run in ("first", "rerun"):
            slowest = ", ".join(f"{name} {seconds:.0f} s" for seconds, name in row[run]["slowest_tasks"])
            print(f"slowest tasks, {run} run of {size} nodes: {slowest}")
    if len(rows) >= 2:
        small, large = sorted(rows)[0], sorted(rows)[-1]
        for key, label in (("wall_s", "first run"), ("pull_s", "pull phase"), ("controller_bytes", "controller bytes")):
            ratio = rows[large]["first"][key] / rows[small]["first"][key]
            print(f"{label}: {large} nodes / {small} nodes = {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
