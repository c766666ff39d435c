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

ALL_STAGES=(lint unit modules backend molecule-default molecule-ha)
STAGES=("${@:-${ALL_STAGES[@]}}")

cleanup() {
  for script in extensions/molecule/resources/cleanup.sh backend/tests/cleanup.sh; do
    [ -x "$script" ] && "$script" >/dev/null 2>&1
  done
  return 0
}
trap cleanup EXIT INT TERM

stage_lint() {
  yamllint -s . && ansible-lint && antsibull-changelog lint
}
stage_unit() {
  pytest -q tests/unit
}
stage_modules() {
  pytest -q tests/integration/modules
}
stage_backend() {
  pytest -q backend/tests
}
stage_molecule-default() {
  molecule test -s default
}
stage_molecule-ha() {
  molecule test -s ha
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
