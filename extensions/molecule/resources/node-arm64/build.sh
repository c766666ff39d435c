#!/usr/bin/env bash
# Build the emulated arm64 fleet node (./Dockerfile) on this x86_64 machine,
# and the arm64 Debian base image its engine builds the Dask image from.
#
# Usage: build.sh BASE_ARCHIVE
#   Writes BASE_ARCHIVE, the arm64 debian:bookworm as a `docker save`
#   archive (the node's dask_image_base_image_archive: the node cannot pull
#   it), and prints the node image's name as the last line of stdout.
#
# Needs qemu-user-static registered for aarch64 with the F (works inside
# containers) and C (setuid programs, sudo, keep their rights) flags:
# scripts/host-setup.sh does that. The arm64 Debian comes from debootstrap
# (DEBIAN_MIRROR), once per machine: it is cached in
# ${XDG_CACHE_HOME:-~/.cache}/dask_swarm_gateway/arm64. Each image is
# tagged by what it is built from, and built only when absent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_dir="$here/../node"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/dask_swarm_gateway/arm64"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { echo "node-arm64/build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: build.sh BASE_ARCHIVE"
base_archive="$1"

binfmt=/proc/sys/fs/binfmt_misc/qemu-aarch64
flags="$(sed -n 's/^flags: //p' "$binfmt" 2>/dev/null || true)"
grep -qx enabled "$binfmt" 2>/dev/null && [[ "$flags" == *F* && "$flags" == *C* ]] \
  || die "arm64 programs cannot run here: $binfmt is not an enabled qemu-aarch64 entry with flags F and C (run scripts/host-setup.sh)"

mkdir -p "$cache"
rootfs_tar="$cache/debian-bookworm-arm64.tar"
if [[ ! -s "$rootfs_tar" ]]; then
  log "debootstrap of an arm64 Debian bookworm (once per machine)"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --arch=arm64 --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || die "debootstrap failed (see $cache/debootstrap.log)"
  # As Debian's own image ships, without downloaded packages and lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
fi

# tag_of WORDS...: 12 hex digits of the hash of the words and of the files
# they name, so an image is rebuilt exactly when what it is built from changes.
tag_of() {
  local word
  for word in "$@"; do
    if [[ -f "$word" ]]; then basename "$word"; cat "$word"; else echo "$word"; fi
  done | sha256sum | cut -c1-12
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

rootfs_digest="$(sha256sum "$rootfs_tar" | cut -d' ' -f1)"
base_image="dask-swarm-node-arm64-base:${rootfs_digest:0:12}"
if ! have_image "$base_image"; then
  log "loading $base_image"
  tmp_archive="$cache/base-image-host.tar"
  python3 "$here/docker_archive.py" "$rootfs_tar" "$tmp_archive" --tag "$base_image"
  docker load -i "$tmp_archive" >/dev/null
  rm -f "$tmp_archive"
fi

stage_image="dask-swarm-node-arm64-stage:$(tag_of "$base_image" "$node_dir"/*)"
if ! have_image "$stage_image"; then
  log "building $stage_image (the shared node image, arm64)"
  docker build -q --build-arg "BASE_IMAGE=$base_image" -t "$stage_image" "$node_dir" >/dev/null
fi

node_image="dask-swarm-node-arm64:$(tag_of "$stage_image" "$here/Dockerfile" "$here/runc")"
if ! have_image "$node_image"; then
  log "building $node_image"
  docker build -q --build-arg "NODE_IMAGE=$stage_image" -t "$node_image" "$here" >/dev/null
fi

if [[ ! -s "$base_archive" ]]; then
  python3 "$here/docker_archive.py" "$rootfs_tar" "$base_archive" --tag debian:bookworm
fi
echo "$node_image"
