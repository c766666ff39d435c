#!/usr/bin/env python
"""Failure detection: how long the gateway takes to report what Swarm knows.

The failure cases are the backend's integration tests
(backend/tests/integration/test_failures.py): a real swarm, a real gateway,
the stock client. Each test prints its detection time ("... after N s");
this script runs them ``--reps`` times and tabulates those times against
issue 12's goals. The tests assert only generous bounds; the goals are
judged here.

The lost node needs a fleet of several nodes: its time comes from a Molecule
run's output, where extensions/molecule/resources/tests/test_lost_node.py
prints it. ``--log FILE`` (repeatable) adds the times printed in the output of
any earlier run, e.g. a CI log (``bash .ci/run``), which holds both.

Usage: .venv/bin/python benchmarks/failure_detection/run.py [--reps 3] [--log FILE ...]
"""

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "backend" / "tests" / "integration" / "test_failures.py"

# What each printed line measures, and the goal for it (seconds).
CASES = [
    (r"unplaceable scale refused after", "scale() no node could serve: caller's error", 15),
    (r"unplaceable worker reported after", "worker Swarm cannot place: reason in the log", 15),
    (r"cluster failed after", "  ... cluster failed, next request says why", None),
    (r"unplaceable scheduler reported to the client after", "scheduler Swarm cannot place: client's error", 15),
    (r"scheduler that waited for capacity reported", "scheduler waiting for capacity: error at timeout", None),
    (r"lost scheduler \(kill_container\) failed its cluster after", "running scheduler killed: cluster failed", 10),
    (r"lost scheduler \(remove_service\) failed its cluster after", "running scheduler's service removed", 10),
    (r"orphan swept after", "orphan swept (period 3 s here, 300 s default)", None),
    (r"image \S+ refused after", "image no node could run: refused", 15),
    (r"worker on lost node \S+ replaced after", "worker on a lost node: replacement connected", 20),
]
SECONDS = re.compile(r" after (\d+(?:\.\d+)?) s")


def times_in(text):
    """{case pattern: [seconds, ...]} from printed report lines."""
    found = {}
    for line in text.splitlines():
        for pattern, _, _ in CASES:
            if re.search(pattern, line):
                match = SECONDS.search(line)
                if match:
                    found.setdefault(pattern, []).append(float(match.group(1)))
    return found


def run_tests():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        sys.exit(f"the failure tests failed:\n{proc.stdout[-5000:]}")
    return proc.stdout


def table(found):
    head = f"{'case':<50}{'median s':>10}{'min-max s':>14}{'goal s':>8}  met"
    lines = [head, "-" * len(head)]
    for pattern, label, goal in CASES:
        values = found.get(pattern)
        if not values:
            lines.append(f"{label:<50}{'-':>10}{'-':>14}{goal or '-':>8}  not measured")
            continue
        med = statistics.median(values)
        met = "-" if goal is None else ("yes" if max(values) <= goal else "no")
        lines.append(f"{label:<50}{med:>10.1f}{f'{min(values):.1f}-{max(values):.1f}':>14}{goal or '-':>8}  {met}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--log", action="append", default=[],
                        help="an earlier run's output (pytest or CI) whose printed times to add")
    args = parser.parse_args()
    found = {}
    for i in range(args.reps):
        for pattern, values in times_in(run_tests()).items():
            found.setdefault(pattern, []).extend(values)
        print(f"round {i + 1} done", file=sys.stderr)
    for log in args.log:
        for pattern, values in times_in(Path(log).read_text(errors="replace")).items():
            found.setdefault(pattern, []).extend(values)
    print(table(found))


if __name__ == "__main__":
    main()
