# SPDX-License-Identifier: GPL-3.0-or-later
"""The stand-in for Docker's apt repository (extensions/molecule/resources/docker_ce_repo.py).

The Molecule test of docker_engine_source: docker_ce points the role at this
repository instead of download.docker.com, which CI cannot reach. These tests
build it, serve it over HTTP on 127.0.0.1 and let a real apt, in a private root
(its own APT_CONFIG, lists, cache, status and keys: nothing of this machine's
apt is read or written), fetch it through a deb822 source like the one the
role's deb822_repository task writes, its key downloaded from <distro>/gpg.
They show that apt verifies the signature and the index hashes, and finds the
stand-in packages under Docker's names and versions.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "extensions" / "molecule" / "resources" / "docker_ce_repo.py"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("apt-get", "apt-cache", "dpkg-deb", "gpg", "gpgv")),
    reason="needs apt-get, apt-cache, dpkg-deb, gpg and gpgv (a Debian-family machine)",
)

# (distro, release, architecture, Docker's version of docker-ce there)
CASES = [
    ("debian", "bookworm", "amd64", "5:27.3.1-1~debian.12~bookworm"),
    ("ubuntu", "noble", "arm64", "5:27.3.1-1~ubuntu.24.04~noble"),
]
IDS = [f"{distro}-{release}-{arch}" for distro, release, arch, _ in CASES]
PACKAGES = {"docker-ce", "docker-ce-cli", "containerd.io"}


def build(outdir, *args, env=None, check=True):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(outdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def stanzas(text):
    """deb822 text -> [{field: value}] (continuation lines kept)."""
    out = []
    for block in text.strip().split("\n\n"):
        fields, name = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                fields[name] += "\n" + line
            else:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        out.append(fields)
    return out


def hash_lines(value):
    """A Release hash section -> {path: (digest, size)}."""
    out = {}
    for line in value.strip().splitlines():
        digest, size, path = line.split()
        out[path] = (digest, int(size))
    return out


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.read()


class PrivateApt:
    """apt-get and apt-cache with a configuration, state and keys of their own."""

    def __init__(self, root, arch, status=""):
        self.root = root
        for sub in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "etc/apt/keyrings",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
            "download",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").write_text(status)
        lines = [
            f'Dir "{root}/";',
            # Read before anything else (APT_CONFIG), so the machine's own
            # /etc/apt/apt.conf{,.d} are never read.
            f'Dir::Etc::main "{root}/etc/apt/apt.conf";',
            f'Dir::Etc::parts "{root}/etc/apt/apt.conf.d";',
            f'Dir::Etc::sourcelist "{root}/etc/apt/sources.list";',
            f'Dir::Etc::sourceparts "{root}/etc/apt/sources.list.d";',
            f'Dir::Etc::trusted "{root}/etc/apt/trusted.gpg";',
            f'Dir::Etc::trustedparts "{root}/etc/apt/trusted.gpg.d";',
            f'Dir::State::status "{root}/var/lib/dpkg/status";',
            f'APT::Architecture "{arch}";',
            f'APT::Architectures {{ "{arch}"; }};',
            'Debug::NoLocking "true";',
            'Acquire::Languages "none";',
            'Acquire::http::Proxy::127.0.0.1 "DIRECT";',
            'Acquire::Retries "0";',
        ]
        if os.geteuid() == 0:
            # Root's apt downloads as _apt, who cannot enter pytest's tmp dirs.
            lines.append('APT::Sandbox::User "root";')
        self.config = root / "apt.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {
            key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")
        } | {"APT_CONFIG": str(self.config), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}

    def add_docker_source(self, url, distro, release, arch, key_url=None, channel="stable"):
        """What roles/docker_engine/tasks/docker_ce_repo.yml makes deb822_repository write."""
        key = fetch(key_url or f"{url}/{distro}/gpg")
        assert key.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        key_file = self.root / "etc/apt/keyrings/docker.asc"  # .asc: apt takes it armored
        key_file.write_bytes(key)
        (self.root / "etc/apt/sources.list.d/docker.sources").write_text(
            f"Types: deb\nURIs: {url}/{distro}\nSuites: {release}\nComponents: {channel}\n"
            f"Architectures: {arch}\nSigned-By: {key_file}\n"
        )

    def __call__(self, *args):
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root / "download",
            timeout=60,
        )
        result.output = result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both repositories in one root, as download.docker.com/linux has them,
    and debian/trixie; then bookworm is built again: a rebuild must work, and
    its new key must sign trixie too."""
    root = tmp_path_factory.mktemp("docker-ce-repo")
    for distro, release, arch, _ in CASES + [("debian", "trixie", "amd64", None)] + CASES[:1]:
        build(root, "--distro", distro, "--release", release, "--arch", arch)
    with serve(root) as url:
        yield root, url


@pytest.mark.parametrize(("distro", "release", "arch", "version"), CASES, ids=IDS)
def test_layout_hashes_and_signatures(served, tmp_path, distro, release, arch, version):
    root, _ = served
    base = root / distro
    dist = base / "dists" / release
    assert (base / "gpg").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    for name in ("InRelease", "Release", "Release.gpg"):
        assert (dist / name).is_file(), name

    (release_fields,) = stanzas((dist / "Release").read_text())
    assert release_fields["Origin"] == "Docker-stand-in"
    assert release_fields["Suite"] == release_fields["Codename"] == release
    assert release_fields["Architectures"] == arch
    assert release_fields["Components"] == "stable"
    assert release_fields["Date"].endswith(" UTC")
    indices = {f"stable/binary-{arch}/Packages", f"stable/binary-{arch}/Packages.gz"}
    for section, algorithm in (("SHA256", hashlib.sha256), ("MD5Sum", hashlib.md5)):
        listed = hash_lines(release_fields[section])
        assert set(listed) == indices
        for path, (digest, size) in listed.items():
            data = (dist / path).read_bytes()
            assert (algorithm(data).hexdigest(), len(data)) == (digest, size), f"{section} of {path}"

    packages = (dist / f"stable/binary-{arch}/Packages").read_bytes()
    assert gzip.decompress((dist / f"stable/binary-{arch}/Packages.gz").read_bytes()) == packages
    entries = {entry["Package"]: entry for entry in stanzas(packages.decode())}
    assert set(entries) == PACKAGES
    assert entries["docker-ce"]["Version"] == entries["docker-ce-cli"]["Version"] == version
    for entry in entries.values():
        assert entry["Architecture"] == arch
        assert entry["Filename"].startswith(f"dists/{release}/pool/stable/{arch}/")
        deb = (base / entry["Filename"]).read_bytes()
        assert int(entry["Size"]) == len(deb)
        assert entry["SHA256"] == hashlib.sha256(deb).hexdigest()
        assert entry["MD5sum"] == hashlib.md5(deb).hexdigest()

    # The served key verifies both signatures, with gpgv as apt calls it.
    assert_signed(dist, base / "gpg", tmp_path)


def assert_signed(dist, key, tmp_path):
    keyring = tmp_path / "key.gpg"
    subprocess.run(
        ["gpg", "--batch", "--yes", "--dearmor", "--output", str(keyring), str(key)],
        check=True,
        env=dict(os.environ, GNUPGHOME=str(tmp_path)),
    )
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        result = subprocess.run(
            ["gpgv", "--keyring", str(keyring), *(str(dist / a) for a in args)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def test_a_rebuild_re_signs_the_distros_other_releases(served, tmp_path):
    root, _ = served
    assert_signed(root / "debian/dists/trixie", root / "debian/gpg", tmp_path)


@pytest.mark.parametrize(("distro", "release", "arch", "version"), CASES, ids=IDS)
def test_apt_verifies_and_uses_the_repository(served, tmp_path, distro, release, arch, version):
    _, url = served
    apt = PrivateApt(tmp_path, arch)
    apt.add_docker_source(url, distro, release, arch)

    update = apt("apt-get", "update")
    assert update.returncode == 0, update.output
    for bad in ("NO_PUBKEY", "not signed", "W:", "E:", "Err:"):
        assert bad not in update.output, update.output

    policy = apt("apt-cache", "policy", *sorted(PACKAGES))
    assert policy.returncode == 0, policy.output
    assert f"docker-ce:\n  Installed: (none)\n  Candidate: {version}\n" in policy.output, policy.output
    assert f"500 {url}/{distro} {release}/stable {arch} Packages" in policy.output, policy.output
    assert "Candidate: 1.7.22-1" in policy.output  # containerd.io

    show = apt("apt-cache", "show", "docker-ce")
    (entry,) = stanzas(show.stdout)
    assert entry["Depends"] == "docker-ce-cli, containerd.io"

    install = apt("apt-get", "install", "--simulate", "--no-install-recommends", *sorted(PACKAGES))
    assert install.returncode == 0, install.output
    assert f"Inst docker-ce ({version} Docker CE stand-in:{release} [{arch}])" in install.output

    # apt checks the .deb against Packages' SHA256 as it downloads it.
    download = apt("apt-get", "download", "docker-ce")
    assert download.returncode == 0, download.output
    (deb,) = (tmp_path / "download").glob("docker-ce_*.deb")
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert fields == f"Package: docker-ce\nVersion: {version}\nArchitecture: {arch}\n"


def test_apt_refuses_the_repository_with_another_key(served, tmp_path):
    _, url = served
    distro, release, arch, _ = CASES[0]
    other = tmp_path / "other"
    build(other, "--distro", distro, "--release", release, "--arch", arch)
    apt = PrivateApt(tmp_path / "apt", arch)
    with serve(other) as other_url:
        apt.add_docker_source(url, distro, release, arch, key_url=f"{other_url}/{distro}/gpg")

    update = apt("apt-get", "update")
    assert update.returncode != 0, update.output
    assert "NO_PUBKEY" in update.output and "is not signed" in update.output, update.output
    assert "Candidate: 5:" not in apt("apt-cache", "policy", "docker-ce").output


def test_apt_refuses_an_index_that_does_not_match_release(tmp_path):
    distro, release, arch, version = CASES[0]
    repo = tmp_path / "repo"
    build(repo, "--distro", distro, "--release", release, "--arch", arch)
    index = repo / distro / "dists" / release / "stable" / f"binary-{arch}"
    tampered = (index / "Packages").read_text().replace(version, version.replace("27.3.1", "99.0.0"))
    (index / "Packages").write_text(tampered)
    (index / "Packages.gz").write_bytes(gzip.compress(tampered.encode()))

    apt = PrivateApt(tmp_path / "apt", arch)
    with serve(repo) as url:
        apt.add_docker_source(url, distro, release, arch)
        update = apt("apt-get", "update")
    assert update.returncode != 0, update.output
    assert "Hash Sum mismatch" in update.output or "unexpected size" in update.output, update.output
    assert "99.0.0" not in apt("apt-cache", "policy", "docker-ce").output


def test_several_architectures_and_a_reproducible_release(tmp_path):
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    for out in ("a", "b"):
        build(tmp_path / out, "--release", "trixie", "--arch", "amd64", "--arch", "arm64", "armhf", env=env)
    dist = tmp_path / "a" / "debian" / "dists" / "trixie"
    (fields,) = stanzas((dist / "Release").read_text())
    assert fields["Architectures"] == "amd64 arm64 armhf"
    assert fields["Date"] == "Tue, 14 Nov 2023 22:13:20 UTC"
    assert set(hash_lines(fields["SHA256"])) == {
        f"stable/binary-{arch}/Packages{ext}" for arch in ("amd64", "arm64", "armhf") for ext in ("", ".gz")
    }
    assert "Version: 5:27.3.1-1~debian.13~trixie" in (dist / "stable/binary-arm64/Packages").read_text()
    # Same inputs, same packages and indices; only the key and signatures differ.
    assert (dist / "Release").read_bytes() == (tmp_path / "b/debian/dists/trixie/Release").read_bytes()


@pytest.fixture
def engine_deb(tmp_path):
    """A small package shaped like Debian's docker.io: files, a maintainer
    script, and docker.io's Conflicts on Docker's packages."""
    tree = tmp_path / "docker.io"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "usr/sbin/dockerd").write_text("#!/bin/sh\necho engine\n")
    (tree / "usr/sbin/dockerd").chmod(0o755)
    (tree / "DEBIAN/control").write_text(
        "Package: docker.io\nSource: docker.io (20.10.24+dfsg1-1)\nVersion: 20.10.24+dfsg1-1+b1\n"
        "Architecture: amd64\nMaintainer: Someone <someone@example.invalid>\n"
        "Depends: libc6 (>= 2.34)\nConflicts: docker-ce, docker-ce-cli, docker-ce-rootless-extras\n"
        "Built-Using: golang-1.19 (= 1.19.8-2)\nDescription: Linux container runtime\n the engine\n"
    )
    (tree / "DEBIAN/postinst").write_text("#!/bin/sh\nset -e\necho configured\n")
    (tree / "DEBIAN/postinst").chmod(0o755)
    deb = tmp_path / "docker.io_20.10.24+dfsg1-1+b1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def dpkg_deb(*args):
    return subprocess.run(["dpkg-deb", *map(str, args)], capture_output=True, check=True).stdout


def test_an_engine_deb_becomes_docker_ce(tmp_path, engine_deb):
    distro, release, arch, version = CASES[0]
    repo = tmp_path / "repo"
    build(repo, "--distro", distro, "--release", release, "--arch", arch, "--engine-deb", str(engine_deb))
    (deb,) = (repo / distro / "dists" / release / "pool" / "stable" / arch).glob("docker-ce_*.deb")

    (fields,) = stanzas(dpkg_deb("--field", deb).decode())
    assert fields["Package"] == "docker-ce"
    assert fields["Version"] == version
    assert fields["Depends"] == "libc6 (>= 2.34), docker-ce-cli, containerd.io"
    assert fields["Conflicts"] == "docker (<< 1.10.0), docker-engine, docker.io"
    assert "Source" not in fields and "Built-Using" not in fields
    # The engine's files and scripts, unchanged.
    assert dpkg_deb("--fsys-tarfile", deb) == dpkg_deb("--fsys-tarfile", engine_deb)
    postinst = tmp_path / "postinst"
    dpkg_deb("--control", deb, postinst)
    assert (postinst / "postinst").read_text() == "#!/bin/sh\nset -e\necho configured\n"

    # A machine with Debian's engine installed: docker-ce replaces it.
    status = "".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: admin\n"
        f"Maintainer: x <x@example.invalid>\nArchitecture: {arch}\nVersion: {pkg_version}\n"
        f"Description: installed\n\n"
        for name, pkg_version in (("libc6", "2.36-9+deb12u9"), ("docker.io", "20.10.24+dfsg1-1+deb12u1+b6"))
    )
    apt = PrivateApt(tmp_path / "apt", arch, status=status)
    with serve(repo) as url:
        apt.add_docker_source(url, distro, release, arch)
        update = apt("apt-get", "update")
        assert update.returncode == 0, update.output
        install = apt("apt-get", "install", "--simulate", *sorted(PACKAGES))
    assert install.returncode == 0, install.output
    assert "Remv docker.io [20.10.24+dfsg1-1+deb12u1+b6]" in install.output, install.output
    assert f"Inst docker-ce ({version} Docker CE stand-in:{release} [{arch}])" in install.output


def test_an_engine_deb_must_match_the_architectures(tmp_path, engine_deb):
    result = build(tmp_path / "repo", "--arch", "arm64", "--engine-deb", str(engine_deb), check=False)
    assert result.returncode != 0
    assert "is for amd64, which is not among --arch arm64" in result.stderr
    result = build(tmp_path / "repo", "--arch", "amd64", "arm64", "--engine-deb", str(engine_deb), check=False)
    assert result.returncode != 0
    assert "no --engine-deb for arm64" in result.stderr
