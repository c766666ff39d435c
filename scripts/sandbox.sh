#!/usr/bin/env bash
# The local sandbox fleet: node containers made from the Molecule node
# definition (extensions/molecule/resources: node.yml, create.yml,
# destroy.yml), their inventory in inventories/sandbox/, and the very same
# site.yml a real fleet gets.
#
#   scripts/sandbox.sh up      make demo        MANAGERS=1 WORKERS=2 PORT=8000
#                                               JUPYTERHUB=1 HUB_PORT=PORT+1
#   scripts/sandbox.sh down    make demo-down
#
# `up` ends by printing the gateway's address, the password file and a
# Python snippet that computes on the sandbox; `down` removes every
# container, network and volume of the sandbox, and its inventory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"

FLEET=dask-swarm-sandbox
FLEET_LABEL=dask_swarm.gateway.fleet
INVENTORY="$ROOT/inventories/sandbox"
HOSTS="$INVENTORY/hosts.yml"
RESOURCES="$ROOT/extensions/molecule/resources"
# Outside the checkout, so that an installed collection finds it too.
STATE="${XDG_CACHE_HOME:-$HOME/.cache}/dask_swarm_gateway/sandbox"
MANAGERS="${MANAGERS:-1}"
WORKERS="${WORKERS:-2}"
PORT="${PORT:-8000}"
# JUPYTERHUB=1: the hub too (jupyterhub_enabled), on 127.0.0.1:HUB_PORT.
JUPYTERHUB="${JUPYTERHUB:-0}"
HUB_PORT="${HUB_PORT:-$((PORT + 1))}"

die() { printf 'sandbox: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*"; }

check_counts() {
  [[ "$MANAGERS" =~ ^[0-9]+$ ]] && (( MANAGERS % 2 == 1 )) \
    || die "MANAGERS=$MANAGERS: need an odd number of managers (1, 3, 5) for a Raft quorum"
  [[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS >= 1 )) \
    || die "WORKERS=$WORKERS: need a whole number of worker nodes, at least 1"
  [[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT >= 1 && PORT <= 65535 )) \
    || die "PORT=$PORT: need a TCP port (1-65535) for the gateway on 127.0.0.1"
  [[ "$HUB_PORT" =~ ^[0-9]+$ ]] && (( HUB_PORT >= 1 && HUB_PORT <= 65535 && HUB_PORT != PORT )) \
    || die "HUB_PORT=$HUB_PORT: need a TCP port (1-65535) other than PORT for the hub on 127.0.0.1"
  [[ "$JUPYTERHUB" =~ ^[01]$ ]] || die "JUPYTERHUB=$JUPYTERHUB: need 1 (with the hub) or 0"
}

# Node list in create.yml's terms; the first manager runs the gateway and
# the hub, so it publishes both ports, on loopback only (the hub's always: a
# container's ports are fixed at its start, and JUPYTERHUB=1 may come later).
write_nodes() {
  local file="$1" i
  {
    echo "fleet_nodes:"
    for ((i = 1; i <= MANAGERS; i++)); do
      echo "  - name: manager$i"
      echo "    hostname: sandbox-manager$i"
      echo "    groups: [swarm_managers]"
      if (( i == 1 )); then echo "    published_ports: ['127.0.0.1:$PORT:8000', '127.0.0.1:$HUB_PORT:8001']"; fi
    done
    for ((i = 1; i <= WORKERS; i++)); do
      echo "  - name: worker$i"
      echo "    hostname: sandbox-worker$i"
      echo "    groups: [swarm_workers]"
    done
    echo "fleet_inventory_vars:"
    echo "  gateway_public_url: $(scheme)://127.0.0.1:$PORT"
    echo "  dask_image_base_image_archive: $STATE/base-image.tar"
    echo "  registry_base_image_archive: $STATE/base-image.tar"
    if (( JUPYTERHUB )); then
      echo "  jupyterhub_enabled: true"
      echo "  jupyterhub_public_url: $(scheme)://127.0.0.1:$HUB_PORT"
    fi
  } >"$file"
}

# create.yml adds nodes but never removes them: a smaller or re-ported
# sandbox would leave nodes in the swarm that the inventory no longer lists.
check_existing() {
  local wanted="$1" have extra
  have="$(docker ps -a --filter "label=$FLEET_LABEL=$FLEET" --format '{{.Names}}' | sed "s/^$FLEET-//" | sort)"
  [ -n "$have" ] || return 0
  extra="$(comm -23 <(echo "$have") <(sed -n 's/^  - name: //p' "$wanted" | sort) | tr '\n' ' ')"
  [ -z "$extra" ] || die "the running sandbox has nodes this one would not list ($extra); run 'make demo-down' first"
  if ! docker port "$FLEET-manager1" 8000/tcp 2>/dev/null | grep -qx "127.0.0.1:$PORT"; then
    die "the running sandbox publishes the gateway on another port; run 'make demo-down' first, or use that PORT"
  fi
  if ! docker port "$FLEET-manager1" 8001/tcp 2>/dev/null | grep -qx "127.0.0.1:$HUB_PORT"; then
    die "the running sandbox publishes the hub's port elsewhere (or not at all); run 'make demo-down' first, or use that HUB_PORT"
  fi
}

# A gateway variable as the sandbox gets it: its inventory's value, else the
# role's default (one source of truth). Only plain values are read.
gateway_var() {
  python - "$INVENTORY/group_vars/all.yml" "$ROOT/roles/gateway/defaults/main.yml" "$1" <<'PY'
import os, sys, yaml
inventory, defaults, name = sys.argv[1:]
for path in (inventory, defaults):
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if name in data:
        print(os.path.expanduser(str(data[name])))
        break
PY
}

scheme() { if [ "$(gateway_var gateway_tls)" = none ]; then echo http; else echo https; fi; }

# How the sandbox's gateway_auth logs in: the shared password (simple, the
# role's default without the hub) or each account's own (users).
login() {
  local auth users
  auth="$(gateway_var gateway_auth)"
  [[ -z "$auth" || "$auth" == *"{{"* ]] && auth=simple
  case "$auth" in
    simple)
      LOGIN_USER=me PWFILE="$(gateway_var gateway_password_file)"
      LOGIN_LINES="  Password:  in $PWFILE (mode 0600); any user name" ;;
    users)
      users="$(gateway_var gateway_users | tr -d "[]'")"
      LOGIN_USER="${users%%,*}"
      PWFILE="$(gateway_var gateway_user_password_dir)/$LOGIN_USER.password"
      LOGIN_LINES="  Log in as: $users (admins: $(gateway_var gateway_admins | tr -d "[]'"))
  Passwords: one per user in $(gateway_var gateway_user_password_dir)/<user>.password (mode 0600)" ;;
    jupyterhub) die "gateway_auth: jupyterhub in $INVENTORY logs in through the hub: make demo JUPYTERHUB=1" ;;
    *) die "gateway_auth: $auth in $INVENTORY is none of simple, users and jupyterhub" ;;
  esac
}

print_connect() {
  local elapsed="$1" url ca="" ca_line="" trust=""
  url="$(scheme)://127.0.0.1:$PORT"
  login
  if [ "$(gateway_var gateway_tls)" = self_signed ]; then
    ca="$(gateway_var gateway_ca_file)"
    ca_line="  CA:        $ca (the gateway's certificate authority)"$'\n'
    trust="import os

# Trust the sandbox's CA. aiohttp reads SSL_CERT_FILE when dask_gateway is
# imported, so set it first (or export it before starting Python).
os.environ[\"SSL_CERT_FILE\"] = \"$ca\"
"
  fi
  cat <<TXT

The sandbox's Dask Gateway is up ($((MANAGERS + WORKERS)) nodes, ${elapsed} s).
  Gateway:   $url
$LOGIN_LINES
${ca_line}  Inventory: inventories/sandbox (rerun: .venv/bin/ansible-playbook site.yml -i inventories/sandbox)
  Remove it: make demo-down

Paste into .venv/bin/python, or into a Python 3.11 that has client/requirements.txt
installed (both hold the image's versions):

# --- snippet ---
${trust}from dask_gateway import Gateway, BasicAuth

password = open("$PWFILE").read().strip()
# The with blocks close the client, shut the cluster down and close the
# gateway, also on an error: the stock client can hang a process otherwise.
with Gateway("$url", auth=BasicAuth("$LOGIN_USER", password)) as gateway:
    with gateway.new_cluster(worker_cores=1, worker_memory="1 GiB") as cluster:
        cluster.scale($WORKERS)
        with cluster.get_client() as client:
            client.wait_for_workers($WORKERS, timeout=120)
            futures = client.map(lambda x: x * x, range(100))
            print("sum of squares:", client.submit(sum, futures).result())
            print("workers:", sorted(client.scheduler_info()["workers"]))
# --- end of snippet ---
TXT
}

# With JUPYTERHUB=1 the gateway trusts the hub's tokens only: users log in
# to the hub with the accounts of gateway_users and compute from notebooks.
print_hub() {
  local elapsed="$1" ca pwdir users
  pwdir="$(gateway_var gateway_user_password_dir)"
  users="$(gateway_var gateway_users | tr -d "[]'" )"
  ca="$(gateway_var gateway_ca_file)"
  cat <<TXT

The sandbox's JupyterHub is up ($((MANAGERS + WORKERS)) nodes, ${elapsed} s).
  JupyterHub: $(scheme)://127.0.0.1:$HUB_PORT
  Log in as:  $users (admins: $(gateway_var gateway_admins | tr -d "[]'"))
  Passwords:  one per user in $pwdir/<user>.password (mode 0600)
TXT
  if [ "$(gateway_var gateway_tls)" = self_signed ]; then
    echo "  CA:         $ca (import it in your browser as a certificate authority)"
  fi
  cat <<TXT
  Gateway:    $(scheme)://127.0.0.1:$PORT (dashboards; it takes JupyterHub tokens only)
  Remove it:  make demo-down

In a notebook on the hub, with no address and no password:

# --- notebook ---
from dask_gateway import Gateway

with Gateway() as gateway, gateway.new_cluster() as cluster:
    cluster.scale(2)
    with cluster.get_client() as client:
        client.wait_for_workers(2, timeout=120)
        print("sum of squares:", client.submit(sum, client.map(lambda x: x * x, range(100))).result())
        print("dashboard:", cluster.dashboard_link)
# --- end of notebook ---
TXT
}

up() {
  local start=$SECONDS nodes
  check_counts
  mkdir -p "$STATE"
  nodes="$STATE/nodes.yml"
  write_nodes "$nodes"
  check_existing "$nodes"
  log "starting the sandbox's node containers ($MANAGERS manager(s), $WORKERS worker(s))"
  ansible-playbook "$RESOURCES/create.yml" -e "fleet_name=$FLEET" -e "@$nodes" \
    -e "fleet_inventory_file=$HOSTS" -e "fleet_base_image_archive=$STATE/base-image.tar"
  log "running site.yml on the sandbox, as on a real fleet"
  ansible-playbook site.yml -i "$INVENTORY"
  if (( JUPYTERHUB )); then print_hub $((SECONDS - start)); else print_connect $((SECONDS - start)); fi
}

down() {
  log "removing the sandbox's containers, volumes, network and inventory"
  ansible-playbook "$RESOURCES/destroy.yml" -e "fleet_name=$FLEET" -e "fleet_inventory_file=$HOSTS"
  rm -rf "$STATE"
}

# Sourced (tests/unit/test_sandbox_login.py), it only defines its functions.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down   (MANAGERS=1 WORKERS=2 PORT=8000)" >&2; exit 2 ;;
esac
