#!/usr/bin/env python3
"""Write a root filesystem tarball as an image archive that ``docker load``
reads (the format of ``docker save``), for a given platform and name.

``docker import`` would do the same on this machine's engine, but the arm64
node's engine needs the arm64 Debian under the name ``debian:bookworm``,
which on this machine is the x86_64 one; so the archive is written here.

Usage: docker_archive.py ROOTFS_TAR OUT_TAR --tag NAME:TAG [--arch arm64]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--arch", default="arm64")
    args = parser.parse_args()

    layer = sha256_file(args.rootfs)
    config = json.dumps({
        "architecture": args.arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        "history": [{"created_by": f"debootstrap ({args.rootfs.name})"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{
        "Config": config_name,
        "RepoTags": [args.tag],
        "Layers": [f"{layer}/layer.tar"],
    }]).encode()

    partial = args.out.with_name(args.out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(args.rootfs, arcname=f"{layer}/layer.tar")
        add_bytes(tar, config_name, config)
        add_bytes(tar, "manifest.json", manifest)
    partial.replace(args.out)


if __name__ == "__main__":
    main()
