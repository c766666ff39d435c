#!/usr/bin/env bash
# Run the test stages named on the command line, one after another, or by
# default the set-up and then every stage in LANES: the lanes run side by
# side, each stage of a lane after the one before it. Keep going after a
# failure so one run reports everything, and always remove what the tests
# created. Ends with "stages: N passed, N failed".
#
# Why lanes: on 2 cores most stages leave one idle. The lint, sanity, unit,
# client and modules stages use one core; the backend's tests wait on
# Swarm and on Dask's timeouts with the machine 90% idle. A stage's output
# is kept in tests/output/stages/<stage>.log and printed whole when the
# stage ends (the lanes' outputs never interleave); "==> STAGE: started"
# marks its start.
#
# A run fails when a stage fails, when a stage passes its time limit, when
# anything its stages made is still there after the clean-up, and when it
# is interrupted (SIGINT/SIGTERM: clean-up, then exit 130/143).
#
# Two runs may share one Docker engine (a CI runner): each has a run id,
# DASK_SWARM_TEST_RUN (exported to the stages; one the caller set is kept),
# that Molecule fleets carry in their names and in the label
# dask_swarm.gateway.test-run, and the backend's objects in theirs and in
# dask-gateway-swarm.test-run. The clean-up and the leftover check select by
# this run's id only, so another run's fleet is left alone. Each Molecule
# scenario gets a free loopback port for its gateway
# (DASK_SWARM_TEST_PORT_DEFAULT, DASK_SWARM_TEST_PORT_HA,
# DASK_SWARM_TEST_PORT_HETERO; a caller's is kept) and an ephemeral
# directory of this run's own. The quick start's sandbox has one fixed
# name: a run refuses it while any sandbox exists.
#
# RUN_TESTS_STAGES_FILE=<bash file> is for this script's own tests
# (tests/integration/harness): the file is sourced after the defaults below
# and may redefine ALL_STAGES, LIMIT, the stage_<name> functions (they are
# exported; helpers they call are not), OUTPUT and cleanup (so that it
# removes only the file's own kinds; or it keeps the real one and sets
# OWNED[molecule]=1, with a run id of its own), and set LEFTOVER_FILTERS
# (docker --filter values, e.g. label=k=v, whose objects must be gone at the
# end) and LEFTOVER_WAIT (seconds to wait for them). Unset, nothing changes.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# Molecule and pytest need no terminal; keep their output readable in CI logs.
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
OUTPUT="$ROOT/tests/output"

# Short, and only what container, service and DNS names allow: it becomes
# part of them.
if [ -z "${DASK_SWARM_TEST_RUN:-}" ]; then
  DASK_SWARM_TEST_RUN="$(printf 'rt%x-%x' $(($(date +%s) % 1048576)) $$)"
fi
[[ "$DASK_SWARM_TEST_RUN" =~ ^[a-z0-9][a-z0-9-]{0,23}$ ]] || {
  echo "run-tests: DASK_SWARM_TEST_RUN=$DASK_SWARM_TEST_RUN: need 1-24 of a-z, 0-9, '-'" >&2
  exit 2
}
export DASK_SWARM_TEST_RUN
# Molecule's own ephemeral directory is one per checkout name and scenario,
# which two runs on one machine would share.
export DASK_SWARM_MOLECULE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dask_swarm_gateway/molecule/$DASK_SWARM_TEST_RUN"

ALL_STAGES=(setup lint sanity unit modules client backend molecule-default molecule-ha molecule-hetero quickstart)
# The default run's lanes, after the set-up: each a list of stages, run in
# order; the lanes side by side. Every stage of ALL_STAGES but setup is in
# exactly one lane. modules and backend share the engine's own swarm (the
# flock below): one lane has both, so that neither waits for the other.
# The quickstart's browser drives a notebook about 10 minutes after it
# starts; the backend, which mostly waits, runs beside that part: beside a
# converging Molecule fleet the notebook's cell once gave no output within
# 7 minutes. The lanes' sums are close (durations in the README's Tests
# section).
LANES=(
  "quickstart molecule-hetero"
  "molecule-ha backend lint sanity unit client modules molecule-default"
)

# Seconds each stage may take; far above its usual time on 2 cores (README),
# so only a hang reaches them. The set-up's and each lane's must add up to
# at most RUN_LIMIT (80 minutes), inside CI's 90: a hang still ends with the
# summary. A default run checks that before it starts.
declare -A LIMIT=(
  [setup]=600 [lint]=120 [sanity]=120 [unit]=300 [modules]=180 [client]=120
  [backend]=900 [molecule-default]=1200 [molecule-ha]=1200 [molecule-hetero]=1800
  [quickstart]=1500
)
RUN_LIMIT=4800

stage_setup() { scripts/host-setup.sh; }
stage_lint() { yamllint -s . && ansible-lint && antsibull-changelog lint; }
stage_sanity() { scripts/sanity.sh; }
stage_unit() { pytest -q tests/unit; }
# The engine's own swarm cannot carry a run id: the stages that turn it on
# and off take turns with other runs' (flock, held until the stage ends).
HOST_SWARM_LOCK=/tmp/dask_swarm_gateway.host-swarm.lock
export HOST_SWARM_LOCK
stage_modules() { flock "$HOST_SWARM_LOCK" pytest -q tests/integration/modules tests/integration/harness; }
stage_client() { pytest -q tests/integration/client; }
stage_backend() { flock "$HOST_SWARM_LOCK" pytest -q backend/tests; }
stage_molecule-default() { molecule_scenario default DASK_SWARM_TEST_PORT_DEFAULT; }
stage_molecule-ha() { molecule_scenario ha DASK_SWARM_TEST_PORT_HA; }
stage_molecule-hetero() { molecule_scenario hetero DASK_SWARM_TEST_PORT_HETERO; }
stage_quickstart() { pytest -q tests/system; }

# molecule_scenario SCENARIO PORT_VAR: the gateway's port is picked just
# before the scenario starts (unless the caller set PORT_VAR), so that
# nothing else took it meanwhile; molecule.yml reads it from PORT_VAR.
molecule_scenario() {
  local scenario="$1" port_var="$2" port
  port="${!port_var:-}"
  if [ -z "$port" ]; then
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" || return
  fi
  env "$port_var=$port" MOLECULE_EPHEMERAL_DIRECTORY="$DASK_SWARM_MOLECULE_DIR/$scenario" molecule test -s "$scenario"
}

# Only the kinds of object this run's stages make are removed and checked,
# and of Molecule's and the backend's only this run's: a sandbox of yours
# (make demo), Molecule nodes while `make unit` runs, or another run's, are
# left alone.
SANDBOX_LABEL=dask_swarm.gateway.fleet=dask-swarm-sandbox
MOLECULE_RUN_LABEL="dask_swarm.gateway.test-run=$DASK_SWARM_TEST_RUN"
BACKEND_RUN_LABEL="dask-gateway-swarm.test-run=$DASK_SWARM_TEST_RUN"
declare -A OWNED=()
LEFTOVER_FILTERS=() LEFTOVER_WAIT=30

cleanup() {
  mkdir -p "$OUTPUT"
  {
    # The ephemeral directories stay while a fleet does: `molecule destroy`
    # by hand needs them.
    if [ -n "${OWNED[molecule]:-}" ]; then
      extensions/molecule/resources/cleanup.sh "$MOLECULE_RUN_LABEL" && rm -rf "$DASK_SWARM_MOLECULE_DIR"
    fi
    if [ -n "${OWNED[sandbox]:-}" ]; then
      extensions/molecule/resources/cleanup.sh "$SANDBOX_LABEL" && rm -f inventories/sandbox/hosts.yml
    fi
  } >"$OUTPUT/cleanup.log" 2>&1
}

# What is left of the owned kinds: one "kind id" line each.
leftovers() {
  local filter kind
  local -a filters=()
  [ -n "${OWNED[molecule]:-}" ] && filters+=("label=$MOLECULE_RUN_LABEL")
  [ -n "${OWNED[sandbox]:-}" ] && filters+=("label=$SANDBOX_LABEL")
  [ -n "${OWNED[backend]:-}" ] && filters+=("label=$BACKEND_RUN_LABEL")
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
# Stages named on the command line run one after another; none named: the
# set-up, then the lanes.
LANES_RUN=""
if [ "$#" -gt 0 ]; then
  STAGES=("$@")
else
  LANES_RUN=1 STAGES=(setup)
  # Every stage but the set-up in exactly one lane, so that none is left out.
  lane_stages="$(printf '%s\n' setup ${LANES[@]} | sort)"
  if [ "$lane_stages" != "$(printf '%s\n' "${ALL_STAGES[@]}" | sort)" ]; then
    echo "run-tests: LANES must hold every stage of ALL_STAGES but setup, once: $(echo ${LANES[@]})" >&2
    exit 2
  fi
fi
# shellcheck disable=SC2046 # one name a word
export -f $(compgen -A function stage_) molecule_scenario

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

STAGES_DIR="$OUTPUT/stages"
# The running stages' `timeout` processes, one file a lane: what a signal
# must stop.
LANE_PIDS=()
interrupted() {
  local pid file
  echo "run-tests: interrupted by SIG$1; stopping the running stage and cleaning up" >&2
  # The lanes first, so that none starts another stage.
  for pid in "${LANE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  local -a children=()
  for file in "$STAGES_DIR"/.lane*.child; do
    [ -s "$file" ] && children+=("$(cat "$file")")
  done
  if [ "${#children[@]}" -gt 0 ]; then
    # SIGINT first: pytest and Molecule then run their own teardown (local
    # gateway servers, fixtures); SIGTERM only if that takes too long.
    kill -INT "${children[@]}" 2>/dev/null
    for _ in $(seq 60); do kill -0 "${children[@]}" 2>/dev/null || break; sleep 1; done
    kill -TERM "${children[@]}" 2>/dev/null
    for _ in $(seq 30); do kill -0 "${children[@]}" 2>/dev/null || break; sleep 1; done
  fi
  wait 2>/dev/null
  # What the stopped stages printed, which their lanes could not print.
  for file in "$STAGES_DIR"/*.log; do
    [ -e "$file" ] && [ ! -e "${file%.log}.result" ] && { printf '\n======== %s (stopped) ========\n' "$(basename "$file" .log)"; cat "$file"; }
  done
  exit "$2"
}
trap 'interrupted INT 130' INT
trap 'interrupted TERM 143' TERM

# Runs one stage under its time limit, its output to the stage's log, and
# records its `timeout` process for the signal handler.
run_stage() {
  local stage="$1" lane="$2" rc
  timeout --kill-after=30 "${LIMIT[$stage]}" bash -c "stage_$stage" >"$STAGES_DIR/$stage.log" 2>&1 &
  echo "$!" >"$STAGES_DIR/.lane$lane.child"
  wait "$!"
  rc=$?
  : >"$STAGES_DIR/.lane$lane.child"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "run-tests: stage $stage did not finish within its limit of ${LIMIT[$stage]} s" >>"$STAGES_DIR/$stage.log"
  fi
  return "$rc"
}

# One lane: its stages in order. Each stage's result goes to
# $STAGES_DIR/<stage>.result ("PASS 12"), and its log is printed whole,
# under a lock, when it ends.
run_lane() {
  local lane="$1" stage start result
  shift
  for stage in "$@"; do
    start=$SECONDS
    if [ -e "$STAGES_DIR/.setup-failed" ]; then
      result="NOT RUN (set-up failed)"
    else
      printf '==> %s: started\n' "$stage"
      if [ "$stage" = quickstart ] && [ -n "$(docker ps -aq --filter "label=$SANDBOX_LABEL" 2>/dev/null)" ]; then
        # A sandbox of yours: this stage would replace it, so it is neither run nor removed.
        echo "a sandbox fleet is running (make demo): remove it with 'make demo-down' first" >"$STAGES_DIR/$stage.log"
        touch "$STAGES_DIR/.sandbox-not-owned"
        false
      else
        run_stage "$stage" "$lane"
      fi
      if [ $? -eq 0 ]; then result=PASS; else result=FAIL; fi
      [ "$stage" = setup ] && [ "$result" = FAIL ] && touch "$STAGES_DIR/.setup-failed"
    fi
    echo "$result $((SECONDS - start))" >"$STAGES_DIR/$stage.result"
    flock "$STAGES_DIR/.print" bash -c '
      printf "\n======== %s ========\n" "$1"
      [ -f "$2" ] && cat "$2"
      printf "==> %s: %s in %d s\n" "$1" "$3" "$4"' _ "$stage" "$STAGES_DIR/$stage.log" "$result" $((SECONDS - start))
  done
}

# Every stage this run may start: the named ones, or the set-up and the lanes'.
# shellcheck disable=SC2206 # a lane is a list of stage names
RUNNABLE=("${STAGES[@]}" ${LANES_RUN:+${LANES[@]}})
for stage in "${RUNNABLE[@]}"; do
  [ -n "${LIMIT[$stage]:-}" ] || { echo "unknown stage: $stage (known: ${ALL_STAGES[*]})" >&2; exit 2; }
done
for lane in ${LANES_RUN:+"${LANES[@]}"}; do
  total=${LIMIT[setup]:-0}
  for stage in $lane; do total=$((total + LIMIT[$stage])); done
  if [ "$total" -gt "$RUN_LIMIT" ]; then
    echo "run-tests: the limits of setup and the lane '$lane' add up to $total s, over RUN_LIMIT ($RUN_LIMIT s)" >&2
    exit 2
  fi
done

rm -rf "$STAGES_DIR" && mkdir -p "$STAGES_DIR"
# Every stage that may run owns its kind of object for the clean-up.
for stage in "${RUNNABLE[@]}"; do
  case $stage in
    molecule-*) OWNED[molecule]=1 ;;
    backend) OWNED[backend]=1 ;;
    quickstart) OWNED[sandbox]=1 ;;
  esac
done
started=$SECONDS
if [ -n "$LANES_RUN" ]; then
  # The set-up alone, then the lanes side by side.
  run_lane 0 setup
  lane_no=0
  for lane in "${LANES[@]}"; do
    lane_no=$((lane_no + 1))
    # shellcheck disable=SC2086 # a lane is a list of stage names
    run_lane "$lane_no" $lane &
    LANE_PIDS+=("$!")
  done
  wait "${LANE_PIDS[@]}"
  STAGES=("${RUNNABLE[@]}")
else
  run_lane 0 "${STAGES[@]}" &
  LANE_PIDS+=("$!")
  wait "${LANE_PIDS[@]}"
fi
# A sandbox that was not this run's is neither removed nor checked.
[ -e "$STAGES_DIR/.sandbox-not-owned" ] && unset 'OWNED[sandbox]'

# At most three lines a failed stage's log gives as the reason: pytest's
# FAILED/ERROR lines, Ansible's fatal ones, run-tests' own; else its last two.
failure_lines() {
  local found
  found="$(grep -E '^(FAILED|ERROR) |fatal: \[|^run-tests: |^ERROR: ' "$1" | tail -n 3)"
  if [ -n "$found" ]; then printf '%s\n' "$found"; else grep -v '^[[:space:]]*$' "$1" | tail -n 2; fi
}

passed=0 failed=0 summary=()
for stage in "${STAGES[@]}"; do
  if [ -f "$STAGES_DIR/$stage.result" ]; then
    line="$(cat "$STAGES_DIR/$stage.result")"
    result="${line% *}" seconds="${line##* }"
  else
    result="NOT RUN" seconds=0
  fi
  if [ "$result" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  summary+=("$(printf '%-18s %s %4ds' "$stage" "$result" "$seconds")")
  # Why a stage failed, under its line: CI may keep only the end of the
  # output, which the stages' whole logs above have scrolled away.
  if [ "$result" = FAIL ] && [ -f "$STAGES_DIR/$stage.log" ]; then
    while IFS= read -r why; do summary+=("    ${why:0:200}"); done < <(failure_lines "$STAGES_DIR/$stage.log")
  fi
done

printf '\n======== summary ========\n'
printf '%s\n' "${summary[@]}"
printf 'wall clock: %d s\n' $((SECONDS - started))
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
