#!/usr/bin/env bash
# Run the test stages named on the command line (default: set-up, then all),
# keep going after a failure so one run reports everything, and always
# remove what the tests created. Ends with "stages: N passed, N failed".
#
# A run fails when a stage fails, when a stage passes its time limit, when
# anything its stages made is still there after the clean-up, and when it
# is interrupted (SIGINT/SIGTERM: clean-up, then exit 130/143).
#
# RUN_TESTS_STAGES_FILE=<bash file> is for this script's own tests
# (tests/integration/harness): the file is sourced after the defaults below
# and may redefine ALL_STAGES, LIMIT, the stage_<name> functions (they are
# exported; helpers they call are not), OUTPUT and cleanup (so that it
# removes only the file's own kinds), and set LEFTOVER_FILTERS (docker
# --filter values, e.g. label=k=v, whose objects must be gone at the end)
# and LEFTOVER_WAIT (seconds to wait for them). Unset, nothing changes.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# Molecule and pytest need no terminal; keep their output readable in CI logs.
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
OUTPUT="$ROOT/tests/output"

ALL_STAGES=(setup lint sanity unit modules client backend molecule-default molecule-ha quickstart)

# Seconds each stage may take; far above its usual time on 2 cores (README),
# so only a hang reaches them. Together they stay inside CI's 90 minutes.
declare -A LIMIT=(
  [setup]=900 [lint]=300 [sanity]=300 [unit]=300 [modules]=600 [client]=300
  [backend]=900 [molecule-default]=1200 [molecule-ha]=1500 [quickstart]=1200
)

stage_setup() { scripts/host-setup.sh; }
stage_lint() { yamllint -s . && ansible-lint && antsibull-changelog lint; }
stage_sanity() { scripts/sanity.sh; }
stage_unit() { pytest -q tests/unit; }
stage_modules() { pytest -q tests/integration/modules tests/integration/harness; }
stage_client() { pytest -q tests/integration/client; }
stage_backend() { pytest -q backend/tests; }
stage_molecule-default() { molecule test -s default; }
stage_molecule-ha() { molecule test -s ha; }
stage_quickstart() { pytest -q tests/system; }

# Only the kinds of object this run's stages make are removed and checked:
# a sandbox of yours (make demo), or Molecule nodes while `make unit` runs,
# are left alone.
SANDBOX_LABEL=dask_swarm.gateway.fleet=dask-swarm-sandbox
declare -A OWNED=()
LEFTOVER_FILTERS=() LEFTOVER_WAIT=30

cleanup() {
  mkdir -p "$OUTPUT"
  {
    if [ -n "${OWNED[molecule]:-}" ]; then extensions/molecule/resources/cleanup.sh; fi
    if [ -n "${OWNED[sandbox]:-}" ]; then
      extensions/molecule/resources/cleanup.sh "$SANDBOX_LABEL" && rm -f inventories/sandbox/hosts.yml
    fi
  } >"$OUTPUT/cleanup.log" 2>&1
}

# What is left of the owned kinds: one "kind id" line each.
leftovers() {
  local filter kind
  local -a filters=()
  [ -n "${OWNED[molecule]:-}" ] && filters+=("label=dask_swarm.gateway.molecule")
  [ -n "${OWNED[sandbox]:-}" ] && filters+=("label=$SANDBOX_LABEL")
  [ -n "${OWNED[backend]:-}" ] && filters+=("label=dask-gateway-swarm.test-run")
  filters+=("${LEFTOVER_FILTERS[@]}")
  for filter in "${filters[@]}"; do
    for kind in container volume network service secret config; do
      case $kind in
        container) docker ps -aq --filter "$filter" ;;
        *) docker "$kind" ls -q --filter "$filter" 2>/dev/null ;;
      esac | sed "s|^|$kind |"
    done
  done
}

if [ -n "${RUN_TESTS_STAGES_FILE:-}" ]; then
  # shellcheck source=/dev/null
  source "$RUN_TESTS_STAGES_FILE" || { echo "run-tests: cannot source $RUN_TESTS_STAGES_FILE" >&2; exit 2; }
fi
STAGES=("${@:-${ALL_STAGES[@]}}")
export -f "${ALL_STAGES[@]/#/stage_}"

finish() {
  local status=$? left=""
  trap - EXIT INT TERM
  cleanup
  # Removed services take a few seconds to lose their containers.
  for _ in $(seq "$LEFTOVER_WAIT"); do
    left="$(leftovers)"
    [ -z "$left" ] && break
    sleep 1
  done
  if [ -n "$left" ]; then
    echo "run-tests: the tests left these behind (clean-up log: $OUTPUT/cleanup.log):" >&2
    echo "$left" >&2
    [ "$status" -ne 0 ] || status=1
  fi
  exit "$status"
}
trap finish EXIT

child=""
interrupted() {
  echo "run-tests: interrupted by SIG$1; stopping the running stage and cleaning up" >&2
  if [ -n "$child" ]; then
    # SIGINT first: pytest and Molecule then run their own teardown (local
    # gateway servers, fixtures); SIGTERM only if that takes too long.
    kill -INT "$child" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$child" 2>/dev/null || break; sleep 1; done
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
  fi
  exit "$2"
}
trap 'interrupted INT 130' INT
trap 'interrupted TERM 143' TERM

# Runs one stage under its time limit; in the background, so that `wait`,
# unlike a foreground child, lets a signal reach the traps at once.
run_stage() {
  local stage="$1" rc
  timeout --kill-after=30 "${LIMIT[$stage]}" bash -c "stage_$stage" &
  child=$!
  wait "$child"
  rc=$?
  child=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "run-tests: stage $stage did not finish within its limit of ${LIMIT[$stage]} s" >&2
  fi
  return "$rc"
}

for stage in "${STAGES[@]}"; do
  [ -n "${LIMIT[$stage]:-}" ] || { echo "unknown stage: $stage (known: ${ALL_STAGES[*]})" >&2; exit 2; }
done

passed=0 failed=0 summary=()
for stage in "${STAGES[@]}"; do
  printf '\n======== %s ========\n' "$stage"
  start=$SECONDS
  if [ -n "${setup_failed:-}" ]; then
    result="NOT RUN (set-up failed)"
    failed=$((failed + 1))
  else
    case $stage in
      molecule-*) OWNED[molecule]=1 ;;
      backend) OWNED[backend]=1 ;;
      quickstart) OWNED[sandbox]=1 ;;
    esac
    if [ "$stage" = quickstart ] && [ -n "$(docker ps -aq --filter "label=$SANDBOX_LABEL" 2>/dev/null)" ]; then
      # A sandbox of yours: this stage would replace it, so it is neither run nor removed.
      unset 'OWNED[sandbox]'
      echo "a sandbox fleet is running (make demo): remove it with 'make demo-down' first" >&2
      false
    else
      run_stage "$stage"
    fi
    if [ $? -eq 0 ]; then
      passed=$((passed + 1)); result=PASS
    else
      failed=$((failed + 1)); result=FAIL
      [ "$stage" = setup ] && setup_failed=1
    fi
  fi
  printf '==> %s: %s in %d s\n' "$stage" "$result" $((SECONDS - start))
  summary+=("$(printf '%-18s %s %4ds' "$stage" "$result" $((SECONDS - start)))")
done

printf '\n======== summary ========\n'
printf '%s\n' "${summary[@]}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
