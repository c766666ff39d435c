#!/usr/bin/env bash
# Prepare this machine to run the collection's tests and sandbox fleet:
#   - a running Docker Engine (Debian's docker.io when none is installed),
#   - the locked Python environment in .venv (requirements.txt, `make lock`),
#   - a debian:bookworm base image (debootstrap when no registry can be reached),
#   - Debian's docker-registry (Docker Distribution, a Go binary): the registry
#     modules' tests run it as plain processes, without the Docker Engine,
#   - arm64 emulation (qemu-user-static through binfmt_misc) for the hetero
#     scenario's emulated Raspberry Pi, and debootstrap, which builds its
#     Debian (extensions/molecule/resources/node-arm64/build.sh),
#   - Debian's chromium and chromium-driver, which the notebook tests drive
#     with Selenium as a user's browser, and certutil (libnss3-tools), with
#     which they make that browser trust the sandbox's CA.
# Each step does nothing when its result is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$CACHE"

log() { printf '==> %s\n' "$*"; }
die() { printf 'host-setup: %s\n' "$*" >&2; exit 1; }

apt_install() {
  command -v apt-get >/dev/null || die "need $* but this is not a Debian-family system; install it yourself"
  [ "$(id -u)" = 0 ] || die "need $* installed; run as root, or install it yourself"
  if [ ! -f "$CACHE/.apt-updated" ]; then apt-get update -qq && touch "$CACHE/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then log "Docker Engine is running"; return; fi
  if ! command -v dockerd >/dev/null; then
    log "installing Docker Engine (Debian's docker.io)"
    apt_install docker.io
  fi
  if [ -d /run/systemd/system ]; then
    log "starting Docker Engine with systemd"
    systemctl start docker
  else
    log "starting dockerd (no systemd here); log in $CACHE/dockerd.log"
    nohup dockerd >"$CACHE/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  die "Docker Engine did not answer within 60 s (see $CACHE/dockerd.log)"
}

# .venv holds exactly the lock: a changed lock makes a new venv, not an upgrade
# of the old one, and the result is compared with the lock package by package.
ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then log "Python environment is current"; return; fi
  log "installing the locked Python environment (requirements.txt) into $VENV"
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --require-hashes -r "$ROOT/requirements.txt" \
    || die "pip could not install requirements.txt into $VENV"
  "$VENV/bin/pip" check >/dev/null || die "pip check fails in $VENV: $("$VENV/bin/pip" check)"
  "$VENV/bin/python" "$ROOT/scripts/lock.py" --check-env \
    || die "$VENV does not match requirements.txt (see above)"
  echo "$want" >"$stamp"
}

ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "base image $BASE_IMAGE is present"; return; fi
  if docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then log "pulled $BASE_IMAGE"; return; fi
  log "no registry reachable: building $BASE_IMAGE with debootstrap"
  command -v debootstrap >/dev/null || apt_install debootstrap
  local rootfs; rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' RETURN
  debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed (see $CACHE/debootstrap.log)"
  # As Debian's own image ships: without the downloaded packages and package
  # lists (about 90 MB), which every image built on it, and every node's
  # pull of those images, would otherwise carry.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
}

# The tests do not use the package's own service (which only systemd would start):
# tests/integration/modules/registryprocess.py runs `docker-registry serve` itself.
ensure_registry_binary() {
  if [ -x /usr/bin/docker-registry ]; then log "docker-registry is installed"; return; fi
  log "installing Docker Distribution (Debian's docker-registry)"
  apt_install docker-registry
}

# The interpreter is registered with the flags F (opened now, so that it also
# runs inside containers) and C (setuid programs such as sudo keep their
# rights: Ansible's become on the emulated node needs it). Debian's entry
# has F but not C; an entry without C is replaced.
ensure_browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v certutil >/dev/null; then
    log "chromium, its driver and certutil are installed"; return
  fi
  log "installing Debian's chromium, chromium-driver and libnss3-tools (the notebook tests' browser)"
  apt_install chromium chromium-driver libnss3-tools
}

ensure_arm64_emulation() {
  local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64 conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  # Ansible reaches the emulated node over SSH.
  command -v ssh >/dev/null || apt_install openssh-client
  command -v debootstrap >/dev/null || apt_install debootstrap
  if grep -qx enabled "$entry" 2>/dev/null && grep -q '^flags: .*C' "$entry"; then
    log "arm64 programs run here (qemu-user, binfmt_misc)"; return
  fi
  log "registering qemu-user-static for arm64 programs"
  [ -f "$conf" ] || apt_install qemu-user-static
  [ -f /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (the hetero scenario needs it to run arm64 programs)"
  [ -e "$entry" ] && echo -1 >"$entry"
  local line; line="$(cat "$conf")"
  [[ "${line##*:}" == *C* ]] || line="${line}C"
  echo "$line" >/proc/sys/fs/binfmt_misc/register || die "cannot register $conf with binfmt_misc"
  grep -q '^flags: .*C' "$entry" || die "$entry has no C flag after registration"
}

ensure_docker
ensure_venv
ensure_base_image
ensure_registry_binary
ensure_arm64_emulation
ensure_browser
