#!/usr/bin/env bash
# Build the one Dask image (gateway, scheduler, worker) from a wheelhouse.
#
# The wheelhouse is filled on the controller (this machine) with
# `pip download --only-binary=:all: --platform ...` for the target
# architecture; the Docker build itself installs with --no-index and needs no
# PyPI access. The tag is derived from the content: the lock, the extra
# packages, the backend package (version and source), the Dockerfile and the
# base image's name and digest: the tag is the same on every controller.
#
# Usage: image/build.sh [options]
#   --wheelhouse DIR     wheel directory (default: <repo>/.cache/wheelhouse/<arch>)
#   --arch ARCH          x86_64 | aarch64 (default: uname -m)
#   --base-image IMAGE   base image with python3.11 (default: debian:bookworm); name it
#                        by digest (debian:bookworm@sha256:...) to rebuild when it changes
#   --base-archive FILE  the base image's `docker save` tarball: its config digest
#                        stands for the base image's content in the tag
#   --extra "PKG ..."    extra pip requirements, e.g. "scipy==1.16.3 xarray"
#   --notebook           the image of a fleet with JupyterHub: install the lock
#                        notebook-requirements.txt (the Dask image's packages plus the
#                        hub, JupyterLab and dask-labextension) instead of requirements.txt
#   --repo NAME          image repository (default: dask-gateway-swarm)
#   --tag TAG            override the content-derived tag
#   --python PIP_PY      python used for `pip download` (default: <repo>/.venv/bin/python)
#   --download-only      fill the wheelhouse, don't build
#   --print-tag          print the image reference that would be built, and exit
#   --context-tar FILE   write the build context as a tar file (to build elsewhere), don't build
#   --force              build even if the image already exists
#   --no-cache           build without Docker's layer cache (implies --force)
# The image reference (REPO:TAG) is printed as the last line of stdout.
# requirements.txt and notebook-requirements.txt are the image's locks, made by `make lock` (scripts/lock.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

arch="$(uname -m)"
wheelhouse=""
base_image="debian:bookworm"
base_archive=""
extra=""
repo="dask-gateway-swarm"
tag=""
py="$root/.venv/bin/python"
lock="$here/requirements.txt"
download_only=0
print_tag=0
context_tar=""
force=0
no_cache=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        --base-image) base_image="$2"; shift 2 ;;
        --base-archive) base_archive="$2"; shift 2 ;;
        --extra) extra="$2"; shift 2 ;;
        --notebook) lock="$here/notebook-requirements.txt"; shift ;;
        --repo) repo="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --python) py="$2"; shift 2 ;;
        --download-only) download_only=1; shift ;;
        --print-tag) print_tag=1; shift ;;
        --context-tar) context_tar="$2"; shift 2 ;;
        --force) force=1; shift ;;
        --no-cache) force=1; no_cache=(--no-cache); shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

case "$arch" in
    x86_64|amd64) arch=x86_64 ;;
    aarch64|arm64) arch=aarch64 ;;
    *) echo "build.sh: unsupported arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
[[ -n "$wheelhouse" ]] || wheelhouse="$root/.cache/wheelhouse/$arch"
[[ -x "$py" ]] || py="$(command -v python3)"

log() { echo "build.sh: $*" >&2; }

platform_args=(--only-binary=:all: --python-version 3.11 --implementation cp
    --abi cp311 --abi abi3 --abi none)
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 \
         manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1 linux; do
    platform_args+=(--platform "${p}_${arch}")
done
platform_args+=(--platform any)

extra_file="$(mktemp)"
pins_file="$(mktemp)"
trap 'rm -f "$extra_file" "$pins_file"' EXIT
for pkg in $extra; do echo "$pkg"; done > "$extra_file"
# The lock's versions without its hashes: extras are constrained by them, but
# pip would demand a hash for every extra package if the constraints had any.
sed -n 's/^\([A-Za-z0-9][^ ;\\]*==[^ ;\\]*\).*/\1/p' "$lock" > "$pins_file"

backend_version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/backend/src/dask_gateway_swarm/__init__.py")"
# The base image's content, as any controller sees it: the digest in its
# name, or the config digest its archive records; never an ID of this
# machine's own engine.
base_digest=""
case "$base_image" in *@sha256:*) base_digest="${base_image#*@}" ;; esac
if [[ -z "$base_digest" && -n "$base_archive" ]]; then
    base_digest="$(tar -xOf "$base_archive" manifest.json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Config"].split("/")[-1].removesuffix(".json"))')"
fi

content_hash() {
    {
        echo "base=$base_image digest=$base_digest backend=$backend_version"
        cat "$lock" "$extra_file" "$here/Dockerfile"
        (cd "$root/backend" && find pyproject.toml README.md src -type f \
            ! -path '*__pycache__*' ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -c1-12
}
[[ -n "$tag" ]] || tag="$backend_version-$(content_hash)"
ref="$repo:$tag"

if [[ $print_tag -eq 1 ]]; then echo "$ref"; exit 0; fi

if [[ $download_only -eq 0 && $force -eq 0 && -z "$context_tar" ]] && docker image inspect "$ref" >/dev/null 2>&1; then
    log "image $ref already present"
    echo "$ref"
    exit 0
fi

# Fill the wheelhouse (skipped when a stamp shows it holds this lock +
# extras). Wheels are only ever added, so it keeps a stamp for each lock it
# holds: the image's and the notebook image's do not undo each other.
# Builds on one controller may run at once (two playbooks, the test
# stages' lanes): the lock keeps one from copying a wheel another is still
# writing, until this build's context has its wheels.
mkdir -p "$wheelhouse"
exec 9>"$wheelhouse/.lock"
if command -v flock >/dev/null; then flock 9; fi
want="$(cat "$lock" "$extra_file" | sha256sum | cut -c1-16)"
stamp="$wheelhouse/.stamp-$want"
if [[ ! -e "$stamp" ]]; then
    log "downloading wheels for $arch into $wheelhouse"
    "$py" -m pip download -q -d "$wheelhouse" "${platform_args[@]}" --no-deps \
        -r "$lock"
    if [[ -s "$extra_file" ]]; then
        "$py" -m pip download -q -d "$wheelhouse" "${platform_args[@]}" \
            -r "$extra_file" -c "$pins_file"
    fi
    touch "$stamp"
fi
[[ $download_only -eq 1 ]] && { log "wheelhouse ready: $wheelhouse"; exit 0; }

# Build context: Dockerfile, lock, extras, wheels, backend source.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"; rm -f "$extra_file" "$pins_file"' EXIT
cp "$here/Dockerfile" "$ctx/"
cp "$lock" "$ctx/requirements.txt"
cp "$extra_file" "$ctx/extra-requirements.txt"
cp "$pins_file" "$ctx/constraints.txt"
mkdir "$ctx/wheels" "$ctx/backend"
cp -l "$wheelhouse"/*.whl "$ctx/wheels/" 2>/dev/null || cp "$wheelhouse"/*.whl "$ctx/wheels/"
exec 9>&-
(cd "$root/backend" && tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md src) \
    | tar -x -C "$ctx/backend"

if [[ -n "$context_tar" ]]; then
    mkdir -p "$(dirname "$context_tar")"
    tar -C "$ctx" -cf "$context_tar" .
    log "build context for $ref ($arch) written to $context_tar"
    echo "$ref"
    exit 0
fi

log "building $ref (base $base_image, $arch)"
docker build -q "${no_cache[@]}" \
    --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "IMAGE_TAG=$ref" \
    --label "dask-gateway-swarm.image=true" \
    --label "dask-gateway-swarm.backend-version=$backend_version" \
    --label "dask-gateway-swarm.arch=$arch" \
    -t "$ref" "$ctx" >&2
log "built $ref"
echo "$ref"
