#!/usr/bin/env bash
# Run the test stages named on the command line (default: all), keep going
# after a failure so one run reports everything, and always remove what the
# tests created. Ends with "stages: N passed, N failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# Molecule and pytest need no terminal; keep their output readable in CI logs.
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1

ALL_STAGES=(lint sanity unit modules client backend molecule-default molecule-ha quickstart)
STAGES=("${@:-${ALL_STAGES[@]}}")

# Only the kinds of object this run's stages make are removed: a sandbox of
# yours (make demo), or Molecule nodes while `make unit` runs, are left alone.
molecule_ran=0 sandbox_owned=0
cleanup() {
  if [ "$molecule_ran" = 1 ]; then
    extensions/molecule/resources/cleanup.sh >/dev/null 2>&1
  fi
  if [ "$sandbox_owned" = 1 ]; then
    extensions/molecule/resources/cleanup.sh dask_swarm.gateway.fleet=dask-swarm-sandbox >/dev/null 2>&1
    rm -f inventories/sandbox/hosts.yml
  fi
  return 0
}
trap cleanup EXIT INT TERM

stage_lint() {
  yamllint -s . && ansible-lint && antsibull-changelog lint
}
stage_sanity() {
  scripts/sanity.sh
}
stage_unit() {
  pytest -q tests/unit
}
stage_modules() {
  pytest -q tests/integration/modules
}
stage_client() {
  pytest -q tests/integration/client
}
stage_backend() {
  pytest -q backend/tests
}
stage_molecule-default() {
  molecule_ran=1
  molecule test -s default
}
stage_molecule-ha() {
  molecule_ran=1
  molecule test -s ha
}
stage_quickstart() {
  if [ -n "$(docker ps -aq --filter label=dask_swarm.gateway.fleet=dask-swarm-sandbox)" ]; then
    echo "a sandbox fleet is running (make demo): remove it with 'make demo-down' first" >&2
    return 1
  fi
  sandbox_owned=1
  pytest -q tests/system
}

passed=0 failed=0 summary=()
for stage in "${STAGES[@]}"; do
  declare -F "stage_$stage" >/dev/null || { echo "unknown stage: $stage (known: ${ALL_STAGES[*]})" >&2; exit 2; }
  printf '\n======== %s ========\n' "$stage"
  start=$SECONDS
  if "stage_$stage"; then
    passed=$((passed + 1)); result=PASS
  else
    failed=$((failed + 1)); result=FAIL
  fi
  summary+=("$(printf '%-18s %s %4ds' "$stage" "$result" $((SECONDS - start)))")
done

printf '\n======== summary ========\n'
printf '%s\n' "${summary[@]}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
