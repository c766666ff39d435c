#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build a local stand-in for Docker's apt repository (download.docker.com).

Why this exists: roles/docker_engine can install the engine from Docker's own
apt repository (``docker_engine_source: docker_ce``). download.docker.com cannot
be reached from CI, so that path would go untested. This script builds a
repository laid out exactly like it, to point ``docker_engine_docker_ce_url``
at::

    OUTDIR/<distro>/gpg                                     ASCII-armored key
    OUTDIR/<distro>/dists/<release>/InRelease               clearsigned Release
    OUTDIR/<distro>/dists/<release>/Release                 (and Release.gpg)
    OUTDIR/<distro>/dists/<release>/<channel>/binary-<arch>/Packages(.gz)
    OUTDIR/<distro>/dists/<release>/pool/<channel>/<arch>/*.deb

so the role's repository logic (the deb822 source, the key it downloads, the
suite, component, architecture and package names) meets a real apt. The
packages docker-ce, docker-ce-cli and containerd.io are small stand-ins with
Docker-like versions (5:27.3.1-1~debian.12~bookworm); the engine stays
Debian's docker.io.

Debian's docker.io ``Conflicts: docker-ce, docker-ce-cli``, so a stand-in
docker-ce cannot simply depend on it. Two kinds of docker-ce are built:

- by default a metapackage (a doc file, Depends: docker-ce-cli, containerd.io):
  enough for apt-level tests, but it installs no engine;
- with ``--engine-deb docker.io_*.deb`` (e.g. from ``apt-get download
  docker.io``) that package renamed: its files and maintainer scripts as they
  are (the data member is copied byte for byte), its control file changed to
  Package: docker-ce, a Docker-like version, Depends plus docker-ce-cli and
  containerd.io, and Docker's Conflicts (docker.io) instead of Debian's. So a
  node that installs docker-ce gets Debian's engine, its dependencies
  (containerd, runc, ...) coming from the node's normal Debian mirror.

docker-ce-cli and containerd.io are always metapackages carrying only a doc
file.

Usage::

    python3 docker_ce_repo.py OUTDIR --distro debian --release bookworm \\
        --arch amd64 [--arch arm64] [--channel stable] [--engine-deb DEB ...]

Rebuilding a release replaces it. Each run signs with a new throwaway key (in
a temporary GNUPGHOME, no passphrase), so it re-signs every release of the
distro already in OUTDIR and rewrites ``<distro>/gpg``. SOURCE_DATE_EPOCH, if
set, fixes the Release Date and the packages' timestamps.

Needs python3 (standard library only), dpkg-deb and gpg.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MAINTAINER = "Docker stand-in (dask_swarm.gateway tests) <stand-in@example.invalid>"
KEY_UID = "Docker stand-in repository (dask_swarm.gateway tests) <stand-in@example.invalid>"

# The version number Docker puts in its package versions, by release.
OS_VERSIONS = {
    "debian": {"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14"},
    "ubuntu": {
        "focal": "20.04",
        "jammy": "22.04",
        "noble": "24.04",
        "oracular": "24.10",
        "plucky": "25.04",
    },
}
OS_VERSIONS["raspbian"] = OS_VERSIONS["debian"]

# Fields of Debian's docker.io that make no sense on the renamed package.
DROPPED_ENGINE_FIELDS = {"Source", "Built-Using", "Conflicts", "Breaks", "Replaces", "Provides"}
ENGINE_OVERRIDES = {"Package": "docker-ce", "Maintainer": MAINTAINER}
# What Docker's own docker-ce declares.
ENGINE_RELATIONS = {"Conflicts": "docker (<< 1.10.0), docker-engine, docker.io", "Replaces": "docker-engine"}


def die(message):
    sys.exit(f"docker_ce_repo: {message}")


def epoch():
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None


# --- control files (deb822, one stanza) ---------------------------------------


def parse_control(text):
    """One deb822 stanza as an ordered dict: field -> value (continuations kept)."""
    fields = {}
    name = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if name is None:
                die(f"continuation line before any field: {line!r}")
            fields[name] += "\n" + line
        else:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def format_control(fields):
    return "".join(f"{name}: {value}\n" for name, value in fields.items())


def description(summary, *body):
    return "\n".join([summary] + [f" {line}" if line else " ." for line in body])


# --- packages -----------------------------------------------------------------


def build_metapackage(workdir, pool, fields, doc):
    """A package with one doc file, built by dpkg-deb; returns its path."""
    package = fields["Package"]
    root = workdir / f"{package}_{fields['Architecture']}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "DEBIAN").mkdir(parents=True)
    docdir = root / "usr" / "share" / "doc" / package
    docdir.mkdir(parents=True)
    (docdir / "README.stand-in").write_text(doc)
    (root / "DEBIAN" / "control").write_text(format_control(fields))
    stamp = epoch()
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        if stamp:
            os.utime(path, (stamp, stamp))
    deb = pool / deb_name(fields)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return deb


def deb_name(fields):
    version = fields["Version"].split(":", 1)[-1]  # no epoch in file names
    return f"{fields['Package']}_{version}_{fields['Architecture']}.deb"


def read_ar(path):
    """The members of an ar archive (a .deb): [(name, bytes)]."""
    members = []
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            die(f"{path}: not an ar archive (.deb)")
        while True:
            header = handle.read(60)
            if not header:
                break
            if len(header) != 60 or header[58:60] != b"`\n":
                die(f"{path}: bad ar member header")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58])
            members.append((name, handle.read(size)))
            if size % 2:
                handle.read(1)
    return members


def write_ar(path, members, mtime):
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, data in members:
            header = f"{name:<16}{mtime:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
            handle.write(header.encode())
            handle.write(data)
            if len(data) % 2:
                handle.write(b"\n")


def build_engine_package(engine_deb, pool, version):
    """Debian's docker.io renamed to docker-ce; returns its path."""
    members = read_ar(engine_deb)
    names = [name for name, _ in members]
    if not names or names[0] != "debian-binary" or not any(n.startswith("data.tar") for n in names):
        die(f"{engine_deb}: not a Debian binary package (members: {names})")

    control_tar = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(engine_deb)], check=True, capture_output=True
    ).stdout
    stamp = epoch() or int(time.time())
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(control_tar)) as old, gzip.GzipFile(
        fileobj=out, mode="wb", mtime=stamp
    ) as compressed, tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as new:
        original = None
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else None
            if member.name.lstrip("./") == "control":
                original = parse_control(data.decode())
                fields = engine_control(original, version)
                data = format_control(fields).encode()
                member.size = len(data)
            member.mtime = stamp
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            new.addfile(member, io.BytesIO(data) if data is not None else None)
        if original is None:
            die(f"{engine_deb}: no control file")
    if original["Package"] != "docker.io":
        print(f"docker_ce_repo: note: {engine_deb} is {original['Package']}, not docker.io", file=sys.stderr)

    rebuilt = [("debian-binary", b"2.0\n"), ("control.tar.gz", out.getvalue())]
    rebuilt += [(name, data) for name, data in members if name.startswith("data.tar")]
    deb = pool / deb_name(fields)
    write_ar(deb, rebuilt, stamp)
    return deb


def engine_control(original, version):
    """docker.io's control fields, renamed to docker-ce with Docker's relations."""
    fields = {}
    for name, value in original.items():
        if name in DROPPED_ENGINE_FIELDS or name == "Description":
            continue
        fields[name] = ENGINE_OVERRIDES.get(name, value)
    fields["Version"] = version
    depends = [original["Depends"]] if original.get("Depends") else []
    fields["Depends"] = ", ".join(depends + ["docker-ce-cli", "containerd.io"])
    fields.update(ENGINE_RELATIONS)
    fields["Description"] = description(
        f"Docker CE stand-in: Debian's {original['Package']} {original['Version']}, renamed",
        "The files and maintainer scripts of Debian's engine package, under the",
        "name and a version of Docker's, for testing Docker's apt repository path.",
    )
    return fields


def standin_packages(workdir, pool, arch, docker_version, containerd_version, engine_deb):
    doc = (
        "A stand-in for Docker's package of this name, built by\n"
        "extensions/molecule/resources/docker_ce_repo.py of dask_swarm.gateway\n"
        "to test the docker_engine role's Docker apt repository path.\n"
    )

    def fields(package, version, summary, depends=None):
        out = {"Package": package, "Version": version, "Architecture": arch, "Maintainer": MAINTAINER}
        if depends:
            out["Depends"] = depends
        out["Section"] = "admin"
        out["Priority"] = "optional"
        out["Description"] = description(
            f"{summary} (stand-in)",
            "A metapackage that carries only a doc file, for testing Docker's apt",
            "repository path of the dask_swarm.gateway docker_engine role.",
        )
        return out

    debs = [
        build_metapackage(
            workdir, pool, fields("containerd.io", containerd_version, "An open and reliable container runtime"), doc
        ),
        build_metapackage(
            workdir,
            pool,
            fields("docker-ce-cli", docker_version, "Docker CLI: the open-source application container engine"),
            doc,
        ),
    ]
    if engine_deb:
        debs.append(build_engine_package(engine_deb, pool, docker_version))
    else:
        debs.append(
            build_metapackage(
                workdir,
                pool,
                fields(
                    "docker-ce",
                    docker_version,
                    "Docker: the open-source application container engine",
                    depends="docker-ce-cli, containerd.io",
                ),
                doc,
            )
        )
    return debs


# --- indices ------------------------------------------------------------------


def digests(path):
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def packages_stanza(deb, distro_root):
    control = subprocess.run(["dpkg-deb", "--field", str(deb)], check=True, capture_output=True, text=True).stdout
    fields = parse_control(control)
    md5, sha256 = digests(deb)
    extra = {
        "Filename": deb.relative_to(distro_root).as_posix(),
        "Size": str(deb.stat().st_size),
        "MD5sum": md5,
        "SHA256": sha256,
    }
    stanza = {}
    for name, value in fields.items():
        if name == "Description":
            stanza.update(extra)
        stanza[name] = value
    stanza.update(extra)  # a no-op unless there was no Description
    return format_control(stanza)


def write_release(dist, release, architectures, channels):
    index_files = sorted(
        p.relative_to(dist).as_posix()
        for channel in channels
        for p in (dist / channel).glob("binary-*/Packages*")
    )
    stamp = epoch() or time.time()
    lines = [
        "Origin: Docker-stand-in",
        "Label: Docker CE stand-in",
        f"Suite: {release}",
        f"Codename: {release}",
        f"Architectures: {' '.join(architectures)}",
        f"Components: {' '.join(channels)}",
        "Description: Stand-in for Docker's apt repository (dask_swarm.gateway tests)",
        f"Date: {email.utils.formatdate(stamp, usegmt=True).replace('GMT', 'UTC')}",
    ]
    sums = {name: (digests(dist / name), (dist / name).stat().st_size) for name in index_files}
    lines.append("MD5Sum:")
    lines += [f" {md5} {size:>16} {name}" for name, ((md5, _), size) in sums.items()]
    lines.append("SHA256:")
    lines += [f" {sha256} {size:>16} {name}" for name, ((_, sha256), size) in sums.items()]
    (dist / "Release").write_text("\n".join(lines) + "\n")


# --- signing ------------------------------------------------------------------


class ThrowawayKey:
    """An ed25519 signing key in a temporary GNUPGHOME, without a passphrase."""

    def __init__(self):
        self.home = None
        self.env = None
        self.fingerprint = None

    def __enter__(self):
        # A short path: gpg-agent's socket lives in GNUPGHOME.
        self.home = tempfile.mkdtemp(prefix="dce-gpg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        os.chmod(self.home, 0o700)
        self.env = dict(os.environ, GNUPGHOME=self.home)
        self.gpg("--passphrase", "", "--quick-generate-key", KEY_UID, "ed25519", "sign", "never")
        listing = self.gpg("--with-colons", "--list-secret-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        return self

    def __exit__(self, *exc):
        if shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--kill", "all"], env=self.env, check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def gpg(self, *args):
        command = ["gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
        if result.returncode:
            die(f"{' '.join(command)} failed:\n{result.stderr}")
        return result

    def export(self, path):
        path.write_text(self.gpg("--armor", "--export", self.fingerprint).stdout)

    def sign(self, release):
        common = ["--yes", "--passphrase", "", "--local-user", self.fingerprint, "--digest-algo", "SHA512"]
        self.gpg(*common, "--clearsign", "--output", str(release.with_name("InRelease")), str(release))
        self.gpg(*common, "-abs", "--output", str(release.with_name("Release.gpg")), str(release))


# --- main ---------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="the repository root (what docker_engine_docker_ce_url points at)")
    parser.add_argument("--distro", default="debian", help="debian, ubuntu or raspbian (default: debian)")
    parser.add_argument("--release", default="bookworm", help="the distribution's codename (default: bookworm)")
    parser.add_argument(
        "--arch",
        action="extend",
        nargs="+",
        help="Debian architecture(s), repeatable (default: amd64)",
    )
    parser.add_argument(
        "--channel", action="extend", nargs="+", help="Docker's channel(s): the components (default: stable)"
    )
    parser.add_argument(
        "--os-version",
        help="the release's version in package versions (default: known per release, e.g. 12 for bookworm)",
    )
    parser.add_argument("--docker-version", default="27.3.1", help="upstream version of docker-ce and docker-ce-cli")
    parser.add_argument("--containerd-version", default="1.7.22-1", help="version of containerd.io")
    parser.add_argument(
        "--engine-deb",
        action="append",
        type=Path,
        default=[],
        help="a docker.io .deb to rename to docker-ce, one per architecture (default: a metapackage, no engine)",
    )
    args = parser.parse_args(argv)
    args.arch = list(dict.fromkeys(args.arch or ["amd64"]))
    args.channel = list(dict.fromkeys(args.channel or ["stable"]))
    args.distro = args.distro.lower()
    if args.os_version is None:
        args.os_version = OS_VERSIONS.get(args.distro, {}).get(args.release)
        if args.os_version is None:
            parser.error(f"no known version for {args.distro} {args.release}: pass --os-version")
    for value in (args.distro, args.release, *args.arch, *args.channel):
        if not value or "/" in value or value.startswith(".") or any(c.isspace() for c in value):
            parser.error(f"not a valid name: {value!r}")
    return args


def engine_debs_by_arch(engine_debs, architectures):
    by_arch = {}
    for deb in engine_debs:
        if not deb.is_file():
            die(f"{deb}: no such file")
        arch = subprocess.run(
            ["dpkg-deb", "--field", str(deb), "Architecture"], check=True, capture_output=True, text=True
        ).stdout.strip()
        if arch not in architectures:
            die(f"{deb} is for {arch}, which is not among --arch {' '.join(architectures)}")
        if arch in by_arch:
            die(f"two --engine-deb for {arch}: {by_arch[arch]} and {deb}")
        by_arch[arch] = deb
    missing = [arch for arch in architectures if engine_debs and arch not in by_arch]
    if missing:
        die(f"no --engine-deb for {' '.join(missing)}")
    return by_arch


def main(argv=None):
    args = parse_args(argv)
    for tool in ("dpkg-deb", "gpg"):
        if not shutil.which(tool):
            die(f"{tool} not found")
    engines = engine_debs_by_arch(args.engine_deb, args.arch)

    distro_root = args.outdir.resolve() / args.distro
    dist = distro_root / "dists" / args.release
    shutil.rmtree(dist, ignore_errors=True)
    docker_version = f"5:{args.docker_version}-1~{args.distro}.{args.os_version}~{args.release}"

    with tempfile.TemporaryDirectory(prefix="dce-build-") as workdir:
        for channel in args.channel:
            for arch in args.arch:
                pool = dist / "pool" / channel / arch
                pool.mkdir(parents=True)
                debs = standin_packages(
                    Path(workdir), pool, arch, docker_version, args.containerd_version, engines.get(arch)
                )
                index = dist / channel / f"binary-{arch}"
                index.mkdir(parents=True)
                text = "\n".join(packages_stanza(deb, distro_root) for deb in sorted(debs))
                (index / "Packages").write_text(text)
                with open(index / "Packages.gz", "wb") as raw, gzip.GzipFile(
                    filename="", fileobj=raw, mode="wb", mtime=epoch() or 0
                ) as packed:
                    packed.write(text.encode())
    write_release(dist, args.release, args.arch, args.channel)

    # A new key each run: sign every release of the distro with it.
    with ThrowawayKey() as key:
        for release in sorted((distro_root / "dists").glob("*/Release")):
            key.sign(release)
        key.export(distro_root / "gpg")

    print(f"docker_ce_repo: {distro_root}/dists/{args.release} ({' '.join(args.channel)}; {' '.join(args.arch)})")
    engine = f", engine from {', '.join(map(str, engines.values()))}" if engines else " (a metapackage: no engine)"
    print(f"docker_ce_repo: docker-ce {docker_version}{engine}")
    print(f"docker_ce_repo: key {distro_root}/gpg ({key.fingerprint})")


if __name__ == "__main__":
    main()
