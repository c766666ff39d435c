#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection's plugins (plugins/**), offline.
#
# Why this script:
# - ansible-test only works inside .../ansible_collections/NAMESPACE/NAME, from a
#   real (not symlinked) working directory. So it copies the checkout's files
#   (git-tracked plus untracked, non-ignored ones) into a fresh temp dir
#   $TMP/ansible_collections/dask_swarm/gateway, runs there and removes it.
# - ansible-test runs each sanity test in a virtualenv of its own under
#   ~/.ansible/test/venv, which it would fill from the network (pip's bootstrap
#   script from an ansible-ci host, then pinned packages from PyPI). Instead this
#   script gives ansible-test a private HOME and pre-creates those virtualenvs
#   there, at the paths ansible-test computes, each holding only the packages its
#   test's requirements file names, linked from .venv. So the run needs no
#   network, and .venv (requirements.txt, "# ansible-test sanity") must hold them.
#
# Usage: scripts/sanity.sh [extra ansible-test sanity options, e.g. --test pylint]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
PYTHON_VERSION=3.11

if [[ ! -x $VENV/bin/ansible-test ]]; then
    echo "sanity.sh: $VENV/bin/ansible-test not found; run 'make setup' first" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dask-swarm-sanity.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
COLLECTION=$TMP/ansible_collections/dask_swarm/gateway
mkdir -p "$COLLECTION" "$TMP/home"

# The checkout's files. .collections/ holds a symlink back to the checkout (for
# ansible.cfg); copied, it would loop. Tracked files deleted in the work tree
# are skipped.
cd "$ROOT"
git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' f; do
        [[ $f == .collections/* ]] && continue
        [[ -e $f || -L $f ]] && printf '%s\0' "$f"
    done \
    | xargs -0 -r cp -P --parents -t "$COLLECTION"
cd "$COLLECTION"

export HOME=$TMP/home
export PATH=$VENV/bin:$PATH
unset ANSIBLE_CONFIG ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

# Pre-create the per-test virtualenvs (see the header).
"$VENV/bin/python" - "$PYTHON_VERSION" <<'PY'
import importlib.metadata
import json
import os
import re
import subprocess
import sys

from ansible_test._internal.commands.sanity import hash_pip_commands
from ansible_test._internal.host_configs import NativePythonConfig, VirtualPythonConfig
from ansible_test._internal.python_requirements import collect_requirements
from ansible_test._internal.util import ANSIBLE_TEST_DATA_ROOT
from ansible_test._internal.util_common import yamlcheck

version = sys.argv[1]
python = NativePythonConfig(version=version, path=sys.executable)
requirements_dir = os.path.join(ANSIBLE_TEST_DATA_ROOT, "requirements")
venv_root = os.path.expanduser("~/.ansible/test/venv")
skipped = []

for file_name in sorted(os.listdir(requirements_dir)):
    match = re.fullmatch(r"sanity\.(.+)\.txt", file_name)
    if not match:
        continue
    test = match.group(1)
    with open(os.path.join(requirements_dir, file_name), encoding="utf-8") as handle:
        pins = [line.split("#")[0].strip() for line in handle]
    pins = [pin for pin in pins if pin]

    dists, missing = [], []
    for pin in pins:
        try:
            dists.append(importlib.metadata.distribution(re.match(r"[A-Za-z0-9_.-]+", pin).group(0)))
        except importlib.metadata.PackageNotFoundError:
            missing.append(pin)
    if missing:
        skipped.append("%s (.venv lacks %s)" % (test, ", ".join(missing)))
        continue

    commands = collect_requirements(
        python=python, controller=True, command=None, ansible=False, coverage=False, minimize=False, sanity=test
    )
    path = os.path.join(venv_root, "sanity.%s" % test, version, hash_pip_commands(commands))
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", path], check=True)
    site_packages = os.path.join(path, "lib", "python%s" % version, "site-packages")
    for dist in dists:
        source_root = str(dist.locate_file(""))
        tops = {str(f).split("/")[0] for f in dist.files or []}
        for top in sorted(tops - {"..", "__pycache__"}):
            target = os.path.join(site_packages, top)
            if os.path.exists(os.path.join(source_root, top)) and not os.path.lexists(target):
                os.symlink(os.path.join(source_root, top), target)

    venv_python = VirtualPythonConfig(version=version, path=os.path.join(path, "bin", "python"))
    with open(os.path.join(path, "meta.install.json"), "w", encoding="utf-8") as handle:
        json.dump([command.serialize() for command in commands], handle, indent=4)
    with open(os.path.join(path, "meta.yaml.json"), "w", encoding="utf-8") as handle:
        json.dump(yamlcheck(venv_python) if any(d.metadata["Name"].lower() == "pyyaml" for d in dists) else None, handle)
    open(os.path.join(path, "marker.txt"), "w").close()

if skipped:
    print("sanity.sh: note: no offline virtualenv for %s; should such a test find files to check, it would try the network" % "; ".join(skipped))
PY

status=0
"$VENV/bin/ansible-test" sanity --python "$PYTHON_VERSION" --color no --junit "$@" plugins/ || status=$?

# ansible-test says nothing for a test that passed: count the results it wrote.
"$VENV/bin/python" - <<'PY'
import glob
import xml.etree.ElementTree as ET

passed, failed, skipped = [], [], []
for path in sorted(glob.glob("tests/output/junit/*.xml")):
    for case in ET.parse(path).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name"))
        elif case.find("skipped") is not None:
            reason = case.find("skipped").get("message") or case.find("skipped").text or ""
            skipped.append(case.get("name") + ("" if "No tests applicable" in reason else " (%s)" % reason.strip()))
        else:
            passed.append(case.get("name"))
print("sanity.sh: passed: %s" % " ".join(passed))
print("sanity.sh: skipped (nothing of theirs in plugins/ unless a reason is given): %s" % (" ".join(skipped) or "none"))
if failed:
    print("sanity.sh: failed: %s" % " ".join(failed))
print("sanity: %d passed, %d failed, %d skipped" % (len(passed), len(failed), len(skipped)))
PY
exit "$status"
