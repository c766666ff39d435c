#!/usr/bin/env python
"""Rollout: how long `make demo` and a rerun of site.yml take, before and after a change.

For each git revision named (--revs, default HEAD), a worktree of that
revision is laid out once (sharing this checkout's .venv, so both run the
same lock) and the sandbox fleet of `make demo` is rolled out from it:

  first   `make demo` after `make demo-down`, with the controller's own
          caches removed first: the node image and the wheelhouse the Dask
          image is built from (what a first run on a new controller builds
          or downloads; Docker, the .venv and the base image stay, as
          `make setup` leaves them)
  warm    `make demo` after `make demo-down`, the caches kept
  rerun   `ansible-playbook site.yml -i inventories/sandbox` on that fleet,
          with nothing to change (it must report changed=0)
  gateway the same with `--tags gateway --skip-tags image`: only the
          gateway's and the hub's plays, as an admin changing a gateway
          setting runs them (nothing to change here either)

A revision may carry environment variables for its runs after a '+', so
that one checkout is compared with and without a setting:
`--revs HEAD+ANSIBLE_STRATEGY=free HEAD` is Ansible's free strategy
against the default linear one.

Rounds interleave the revisions at each fleet size (3 nodes, then 9: one
manager, N-1 workers), so a drift in the machine's speed hits all alike.
Each run's wall time and its recap's changed count are printed as a table,
then each later revision's time as a ratio of the first's. Speed is
measured here, never asserted in a test.

The sandbox has one fixed name: the benchmark refuses to start while one
is running, and removes its own at the end.

Usage: .venv/bin/python benchmarks/rollout/run.py [--revs BEFORE AFTER] [--sizes 3 9]
       [--runs first warm rerun gateway] [--rounds 1] [--json out.json]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RESOURCES = REPO / "extensions" / "molecule" / "resources"
NODE = yaml.safe_load((RESOURCES / "node.yml").read_text())
SANDBOX_LABEL = f"{NODE['fleet_label_fleet']}=dask-swarm-sandbox"
WHEELHOUSE = Path(yaml.safe_load((REPO / "roles" / "dask_image" / "defaults" / "main.yml").read_text())
                  ["dask_image_controller_cache"]).expanduser() / "wheelhouse"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
RUNS = ("first", "warm", "rerun", "gateway")
SANDBOX_HOSTS = Path("inventories") / "sandbox" / "hosts.yml"
RERUNS = {
    "rerun": ".venv/bin/ansible-playbook site.yml -i inventories/sandbox",
    "gateway": ".venv/bin/ansible-playbook site.yml -i inventories/sandbox --tags gateway --skip-tags image",
}


def run(cmd, cwd, log, env=None, must_pass=True):
    """Run a command, its output to LOG; return (seconds, output), or, when
    it fails and need not pass, (None, output)."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), text=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", **(env or {})))
    seconds = time.monotonic() - start
    log.write_text(proc.stdout)
    if proc.returncode != 0 and not must_pass:
        return None, proc.stdout
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {cmd} in {cwd}; output in {log}\n{proc.stdout[-3000:]}")
    return seconds, proc.stdout


def changed(output):
    """The changed count of the last playbook's recap, summed over its hosts."""
    last_recap = output.rsplit("PLAY RECAP", 1)[-1]
    return sum(int(n) for _, n, _, _ in RECAP.findall(last_recap))


def sandbox_running():
    return bool(subprocess.run(["docker", "ps", "-aq", "--filter", f"label={SANDBOX_LABEL}"],
                               capture_output=True, text=True, check=True).stdout.strip())


def drop_controller_caches():
    """What a first run builds or downloads on the controller: the node images and the wheelhouse."""
    images = subprocess.run(["docker", "images", "-q", NODE["fleet_node_image_repository"]],
                            capture_output=True, text=True, check=True).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)


class Worktree:
    """A checkout of one revision, sharing this checkout's .venv; SPEC is
    REV or REV+NAME=VALUE[+NAME=VALUE...], the environment of its runs."""

    def __init__(self, spec, workdir, index):
        rev, *assignments = spec.split("+")
        self.rev = spec
        self.env = dict(a.split("=", 1) for a in assignments)
        self.commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout.strip()
        # One directory per spec (its index): two specs may share a commit.
        self.path = Path(workdir) / f"{self.commit}-{index}"
        subprocess.run(["git", "worktree", "add", "--detach", str(self.path), self.commit], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if (self.path / "requirements.txt").read_bytes() != (REPO / "requirements.txt").read_bytes():
            raise SystemExit(f"{rev} locks another environment than this checkout: compare it in a checkout of its own")
        (self.path / ".venv").symlink_to(REPO / ".venv")

    def remove(self):
        subprocess.run(["git", "worktree", "remove", "--force", str(self.path)], cwd=REPO, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revs", nargs="+", default=["HEAD"], help="git revisions to compare (the first is the base)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 9], help="nodes in the fleet (1 manager)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if min(args.sizes) < 2:
        parser.error("--sizes: a fleet needs a manager and at least one worker (2 nodes or more)")
    if sandbox_running():
        raise SystemExit("a sandbox fleet is running (make demo): remove it with 'make demo-down' first")
    workdir = Path(tempfile.mkdtemp(prefix="rollout."))
    logs = REPO / "benchmarks" / "results" / "rollout"
    logs.mkdir(parents=True, exist_ok=True)
    trees = [Worktree(rev, workdir, i) for i, rev in enumerate(args.revs)]
    rows = []
    formed_by = None
    try:
        for size in args.sizes:
            make_vars = f"WORKERS={size - 1}"
            for round_ in range(1, args.rounds + 1):
                for tree in trees:
                    tag = f"{tree.path.name}-{size}-{round_}"
                    for name in args.runs:
                        if name in ("first", "warm"):
                            run(f"make demo-down {make_vars}", tree.path, logs / f"{tag}-down.log")
                            if name == "first":
                                drop_controller_caches()
                            cmd = f"make demo {make_vars}"
                        else:
                            # A fleet of this size, formed by any revision: the
                            # sandbox's inventory is per checkout, so this one
                            # gets a copy. A rerun's changed count shows when
                            # the revisions' roles disagree on the fleet.
                            if not sandbox_running() or formed_by is None or formed_by[1] != size:
                                run(f"make demo-down {make_vars}", tree.path, logs / f"{tag}-rerun-down.log")
                                run(f"make demo {make_vars}", tree.path, logs / f"{tag}-rerun-setup.log", tree.env)
                            elif formed_by[0] != tree.path:
                                shutil.copy(formed_by[0] / SANDBOX_HOSTS, tree.path / SANDBOX_HOSTS)
                            cmd = RERUNS[name]
                        print(f"==> {tree.rev} ({tree.commit}), {size} nodes, round {round_}: {name}", flush=True)
                        # A rerun may fail where a revision lacks what it needs (gateway: before
                        # the gateway kept its image); the row says so and the rounds go on.
                        seconds, output = run(cmd, tree.path, logs / f"{tag}-{name}.log", tree.env,
                                              must_pass=name in ("first", "warm"))
                        formed_by = (tree.path, size)
                        rows.append({"rev": tree.rev, "commit": tree.commit, "nodes": size, "round": round_,
                                     "run": name, "seconds": None if seconds is None else round(seconds, 1),
                                     "changed": "failed" if seconds is None else changed(output)})
                        print(f"    {rows[-1]['seconds']} s, changed={rows[-1]['changed']}", flush=True)
    finally:
        subprocess.run("make demo-down", shell=True, cwd=trees[-1].path if trees else REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for tree in trees:
            tree.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| revision | nodes | run | round | seconds | changed |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        seconds = "failed" if row["seconds"] is None else f"{row['seconds']:.0f}"
        print(f"| {row['rev']} ({row['commit']}) | {row['nodes']} | {row['run']} | {row['round']} "
              f"| {seconds} | {row['changed']} |")
    base = trees[0].rev
    for tree in trees[1:]:
        for size in args.sizes:
            for name in args.runs:
                pairs = [(b["seconds"], a["seconds"]) for b in rows for a in rows
                         if b["rev"] == base and a["rev"] == tree.rev and b["nodes"] == a["nodes"] == size
                         and b["run"] == a["run"] == name and b["round"] == a["round"]
                         and None not in (b["seconds"], a["seconds"])]
                ratios = ", ".join(f"{after / before:.2f}x" for before, after in pairs)
                print(f"{name}, {size} nodes: {tree.rev} / {trees[0].rev} = {ratios} (per round)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
