#!/usr/bin/env python3
"""The four locks of the project, resolved together (`make lock`).

One resolution feeds all four, in this order:

1. image/requirements.in  -> image/requirements.txt
   the Dask image (gateway, schedulers, workers); resolved for Linux x86_64
   and aarch64 from wheels only, and both resolutions must agree;
2. image/notebook-requirements.in -> image/notebook-requirements.txt
   the same image with JupyterHub, JupyterLab and dask-labextension added
   (a fleet with jupyterhub_enabled builds this one for every node), with
   the image's lock as constraints, for the same platforms, wheels only;
3. client/requirements.in -> client/requirements.txt
   a laptop's or notebook's client, any platform, with the image's lock as
   constraints;
4. requirements.in        -> requirements.txt
   the controller and test environment (.venv), any platform, with the locks
   above as constraints.

So the notebooks, the client and the controller hold exactly the image's
version of every package they share with it, and no tool can move one. Every lock
carries sha256 hashes (pip then installs in hash-checking mode) and a header
with the digest of all inputs (a stale lock is detected offline) and
of its own body (a hand edit is detected).

    scripts/lock.py              regenerate the four locks (needs PyPI)
    scripts/lock.py --check      verify them offline: fresh, unedited, agreeing
    scripts/lock.py --check-env  compare this Python environment with requirements.txt
"""

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"
IMAGE_PLATFORMS = ("x86_64-manylinux_2_28", "aarch64-manylinux_2_28")

INPUTS_LINE = "# inputs-sha256: "
LOCK_LINE = "# lock-sha256: "
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)(\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Lock:
    name: str
    #: paths relative to the checkout
    source: str
    output: str
    #: uv options beyond the common ones
    options: tuple = ()
    #: locks (by name) used as constraints
    constraints: tuple = ()
    #: resolved for each of IMAGE_PLATFORMS, which must agree (images); else universal
    per_platform: bool = False


LOCKS = (
    Lock("image", "image/requirements.in", "image/requirements.txt", ("--no-build",), per_platform=True),
    Lock("notebook", "image/notebook-requirements.in", "image/notebook-requirements.txt", ("--no-build",),
         ("image",), per_platform=True),
    Lock("client", "client/requirements.in", "client/requirements.txt", ("--universal",), ("image",)),
    Lock("controller", "requirements.in", "requirements.txt", ("--universal",), ("image", "notebook", "client")),
)
BY_NAME = {lock.name: lock for lock in LOCKS}


@dataclass
class Pin:
    version: str
    marker: str = ""
    hashes: list = field(default_factory=list)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def inputs_digest(root=ROOT):
    """Digest of everything a resolution depends on: every input and the settings."""
    digest = hashlib.sha256()
    digest.update(("python=%s image=%s\n" % (PYTHON_VERSION, ",".join(IMAGE_PLATFORMS))).encode())
    for lock in LOCKS:
        digest.update(lock.source.encode() + b"\0")
        digest.update((root / lock.source).read_bytes())
    return digest.hexdigest()


def split(text):
    """Split a lock into (header lines, body): the header is the leading comment block."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return lines[:n], "".join(lines[n:])


def parse(text):
    """The pins of a lock's body: canonical name -> Pin."""
    pins = {}
    current = None
    for line in split(text)[1].splitlines():
        match = ENTRY.match(line)
        if match:
            current = pins[canonical(match["name"])] = Pin(match["version"], (match["marker"] or "").strip())
        elif current is not None:
            current.hashes.extend(HASH.findall(line))
    return pins


def header_value(text, prefix):
    for line in split(text)[0]:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def uv(*args):
    """Run uv from this environment in the checkout, so that its `# via` lines name relative paths."""
    exe = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not exe:
        sys.exit("lock.py: uv not found (it is in requirements.txt: run `make setup`)")
    args = [str(a).replace(str(ROOT) + "/", "") for a in args]
    return subprocess.run([exe, *args], check=True, capture_output=True, text=True, cwd=ROOT).stdout


def compile_lock(lock, constraint_files, directory, platform=None):
    """Resolve one lock. Its current pins are uv's preferences (a copy as the
    output file), so a new input moves only what it must."""
    seed = Path(directory) / ("%s-%s.txt" % (lock.name, platform or "any"))
    current = ROOT / lock.output
    seed.write_text(split(current.read_text())[1] if current.exists() else "")
    args = ["pip", "compile", ROOT / lock.source, "--python-version", PYTHON_VERSION,
            "--generate-hashes", "--no-header", "--quiet", "--output-file", seed, *lock.options]
    if platform:
        args += ["--python-platform", platform]
    for path in constraint_files:
        args += ["--constraint", path]
    uv(*args)
    # The constraint files live in a temporary directory: name them alone, so
    # that a rerun writes the same lock.
    return seed.read_text().replace(str(directory) + "/", "")


def render(lock, body, digest, uv_version):
    how = {
        "image": "for Linux %s, wheels only" % " and ".join(p.split("-")[0] for p in IMAGE_PLATFORMS),
        "notebook": "for Linux %s, wheels only, constrained by image/requirements.txt"
                    % " and ".join(p.split("-")[0] for p in IMAGE_PLATFORMS),
        "client": "for any platform, constrained by image/requirements.txt",
        "controller": "for any platform, constrained by the image's, the notebook image's and the client's locks",
    }[lock.name]
    head = (
        "# Generated by `make lock` (scripts/lock.py): do not edit.\n"
        "# The full lock of %s, Python %s, %s (%s).\n"
        "%s%s\n%s%s\n"
    ) % (lock.source, PYTHON_VERSION, how, uv_version,
         INPUTS_LINE, digest, LOCK_LINE, hashlib.sha256(body.encode()).hexdigest())
    return head + body


def constraints_file(lock, directory):
    """A lock's pins as name==version constraints (uv and pip read markers, not hashes, there)."""
    path = Path(directory) / ("%s-constraints.txt" % lock.name)
    pins = parse((ROOT / lock.output).read_text())
    path.write_text("".join("%s==%s\n" % (name, pin.version) for name, pin in sorted(pins.items())))
    return path


def regenerate():
    digest = inputs_digest()
    uv_version = " ".join(uv("--version").split()[:2])
    with tempfile.TemporaryDirectory() as tmp:
        for lock in LOCKS:
            constraints = [constraints_file(BY_NAME[name], tmp) for name in lock.constraints]
            if lock.per_platform:
                bodies = {p: compile_lock(lock, constraints, tmp, p) for p in IMAGE_PLATFORMS}
                first, *others = bodies.values()
                for platform, body in zip(IMAGE_PLATFORMS[1:], others):
                    a = {n: (p.version, sorted(p.hashes)) for n, p in parse(first).items()}
                    b = {n: (p.version, sorted(p.hashes)) for n, p in parse(body).items()}
                    if a != b:
                        sys.exit("lock.py: %s resolves differently for %s and %s; the image "
                                 "would need a lock per architecture" % (lock.source, IMAGE_PLATFORMS[0], platform))
                body = first
            else:
                body = compile_lock(lock, constraints, tmp)
            (ROOT / lock.output).write_text(render(lock, body, digest, uv_version))
            print("lock.py: wrote %s (%d packages)" % (lock.output, len(parse(body))))
    problems = check_locks()
    if problems:
        sys.exit("lock.py: the new locks fail their own check:\n  " + "\n  ".join(problems))


def check_locks(root=ROOT):
    """Offline checks of the locks; returns a list of problems (empty when all is well)."""
    problems = []
    digest = inputs_digest(root)
    pins = {}
    for lock in LOCKS:
        where = lock.output
        if not (root / where).exists():
            problems.append("%s is missing: run `make lock`" % where)
            continue
        text = (root / where).read_text()
        if header_value(text, INPUTS_LINE) != digest:
            problems.append("%s is stale: an input (%s) changed since it was made; run `make lock`"
                            % (where, ", ".join(entry.source for entry in LOCKS)))
        body = split(text)[1]
        if header_value(text, LOCK_LINE) != hashlib.sha256(body.encode()).hexdigest():
            problems.append("%s was edited by hand (its lock-sha256 no longer matches); run `make lock`" % where)
        pins[lock.name] = parse(text)
        for name, pin in sorted(pins[lock.name].items()):
            if not pin.hashes:
                problems.append("%s: %s==%s has no --hash" % (where, name, pin.version))
        problems += unmet_inputs(root, lock, pins[lock.name])
    for a, b in (("image", "notebook"), ("image", "client"), ("image", "controller"), ("notebook", "controller"),
                 ("client", "controller")):
        if a in pins and b in pins:
            for name in sorted(set(pins[a]) & set(pins[b])):
                if pins[a][name].version != pins[b][name].version:
                    problems.append("%s differs: %s in %s, %s in %s" % (
                        name, pins[a][name].version, BY_NAME[a].output,
                        pins[b][name].version, BY_NAME[b].output))
    return problems


def requirements(path):
    """The requirements an input file names, following `-r` includes."""
    from packaging.requirements import Requirement

    found = []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        else:
            found.append(Requirement(line))
    return found


def unmet_inputs(root, lock, pins):
    problems = []
    for req in requirements(root / lock.source):
        pin = pins.get(canonical(req.name))
        if pin is None:
            problems.append("%s does not pin %s, which %s asks for; run `make lock`" % (
                lock.output, req.name, lock.source))
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append("%s pins %s==%s, but %s asks for %s; run `make lock`" % (
                lock.output, req.name, pin.version, lock.source, req))
    return problems


def check_env(lock=BY_NAME["controller"]):
    """Compare the running Python environment with a lock; returns a list of problems."""
    from importlib import metadata

    from packaging.markers import Marker

    wanted = {name: pin for name, pin in parse((ROOT / lock.output).read_text()).items()
              if not pin.marker or Marker(pin.marker).evaluate()}
    have = {}
    for dist in metadata.distributions():
        have.setdefault(canonical(dist.metadata["Name"]), dist.version)
    where = lock.output
    problems = ["%s==%s is in %s but not installed" % (n, p.version, where)
                for n, p in sorted(wanted.items()) if n not in have]
    problems += ["%s is installed as %s, %s pins %s" % (n, have[n], where, p.version)
                 for n, p in sorted(wanted.items()) if n in have and have[n] != p.version]
    problems += ["%s %s is installed but not in %s" % (n, v, where)
                 for n, v in sorted(have.items()) if n not in wanted]
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify the locks offline")
    mode.add_argument("--check-env", action="store_true", help="compare this environment with requirements.txt")
    args = parser.parse_args()
    if args.check or args.check_env:
        problems = check_locks() if args.check else check_env()
        for problem in problems:
            print("lock.py: " + problem, file=sys.stderr)
        sys.exit(1 if problems else 0)
    regenerate()


if __name__ == "__main__":
    main()
