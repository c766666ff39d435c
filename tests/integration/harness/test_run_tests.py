# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/run-tests.sh itself: the promises of its header comment and README.

Each test runs the real script as a subprocess with RUN_TESTS_STAGES_FILE
naming a stage file of its own (STAGES below): tiny stages that pass, fail,
hang or leave a Docker volume, with short time limits, in place of the
project's. That file replaces ``cleanup`` with one that only records that it
ran, so the self-test never runs extensions/molecule/resources/cleanup.sh
but for a run id of its own (below), and none of its stage names is one that
owns Molecule, backend or sandbox objects. Checked:

* every stage prints "==> <stage>: PASS|FAIL in N s", and the run ends with
  "stages: N passed, N failed"; a failed stage does not stop later ones,
  and the summary gives its reason (pytest's FAILED line) under its line;
* a stage past its limit is stopped and fails the run with a message;
* SIGTERM / SIGINT stop the running stage (its processes are gone), clean
  up, exit 143 / 130 and run no further stage;
* a failed set-up reports the other stages NOT RUN and still prints the
  summary;
* a Docker volume carrying the run's label (a unique one per test) that is
  still there at the end fails the run; one the stage removed does not.
  Only ``docker volume create/ls/rm`` of that label are used;
* the run id (DASK_SWARM_TEST_RUN) reaches the stages, a caller's is kept,
  a malformed one is refused;
* with no stage named, the set-up runs, then the lanes (LANES) side by
  side: a stage of one lane starts while a stage of the other runs, each
  stage's output is printed in one piece, a failure in one lane stops
  neither lane, a failed set-up runs no lane, SIGTERM stops every lane's
  stage and starts no further one, and LANES that leave out a stage, or
  whose limits add up past RUN_LIMIT, are refused before anything runs;
* two runs on one engine: with the real clean-up of Molecule's kind
  (SELFTEST_REAL_CLEANUP; it selects by the run's id, which the test makes
  unique), the run removes its own labelled volume, while a volume labelled
  with another run's id survives and is not reported as left behind.

    .venv/bin/pytest -q tests/integration/harness
"""

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "run-tests.sh"
# The guard against a broken runner hanging pytest: far above what any case
# needs (the slowest takes a few seconds), far below the hanging stage's 60 s.
GUARD = 25
LABEL_KEY = "dask_swarm.gateway.run-tests-selftest"

STAGES = r"""
# Stages for tests/integration/harness/test_run_tests.py, sourced by run-tests.sh.
if [ -n "${SELFTEST_REAL_LANES:-}" ]; then
  # The project's own stages, LANES and limits, each stage a no-op.
  for name in "${ALL_STAGES[@]}"; do eval "stage_$name() { echo \"ran $name\"; }"; done
  cleanup() { touch "$SELFTEST_DIR/cleanup-ran"; }
  # A real sandbox on the engine (make demo, or a quickstart stage stopped
  # at its limit in the same run) would have the no-op quickstart refused.
  SANDBOX_LABEL=dask_swarm.gateway.fleet=run-tests-selftest-no-sandbox
  OUTPUT="$SELFTEST_DIR/output"
  return 0
fi
ALL_STAGES=(setup pass fail slow hang keep-volume drop-volume show-run run-volume lane-a lane-b hang-b)
LIMIT=([setup]=20 [pass]=20 [fail]=20 [slow]=2 [hang]=30 [keep-volume]=30 [drop-volume]=30 [show-run]=20
       [run-volume]=30 [lane-a]=20 [lane-b]=20 [hang-b]=30)
# The default run's lanes (no stage named); a test may pick others.
# Each but "incomplete" has every stage of its ALL_STAGES in one lane.
case "${SELFTEST_LANES:-}" in
  hang) ALL_STAGES=(setup hang pass hang-b show-run) LANES=("hang pass" "hang-b show-run") ;;
  short) ALL_STAGES=(setup lane-a pass) LANES=("lane-a" "pass") ;;
  incomplete) LANES=("lane-a pass") ;;
  too-long) ALL_STAGES=(setup lane-a pass) LANES=("lane-a pass") RUN_LIMIT=39 ;;
  sides) ALL_STAGES=(setup lane-a fail pass lane-b slow show-run) LANES=("lane-a fail pass" "lane-b slow show-run") ;;
esac
OUTPUT="$SELFTEST_DIR/output"
# The real clean-up would remove Molecule nodes or a sandbox: never here,
# except that of Molecule's kind for a run id that no real fleet has.
# The volumes are left for the leftover check; the test removes them.
if [ -n "${SELFTEST_REAL_CLEANUP:-}" ]; then
  OWNED[molecule]=1
else
  cleanup() { touch "$SELFTEST_DIR/cleanup-ran"; }
fi
if [ -n "${SELFTEST_LABEL:-}" ]; then
  LEFTOVER_FILTERS=("label=$SELFTEST_LABEL") LEFTOVER_WAIT=1
fi

stage_setup() { touch "$SELFTEST_DIR/ran-setup"; [ -z "${SELFTEST_SETUP_FAILS:-}" ]; }
stage_pass() { touch "$SELFTEST_DIR/ran-pass"; }
stage_fail() {
  touch "$SELFTEST_DIR/ran-fail"
  printf 'tests/test_x.py F\nFAILED tests/test_x.py::test_y - AssertionError: the reason\n1 failed in 0.1s\n'
  return 3
}
# The stage records its own PID and its child's, which marks the start.
stage_slow() {
  echo "$BASHPID" >"$SELFTEST_DIR/slow.stage-pid"
  sh -c 'echo $$ >"$1.child-pid" && touch "$1.started" && exec sleep 60' sh "$SELFTEST_DIR/slow"
  touch "$SELFTEST_DIR/slow.finished"
}
stage_hang() {
  echo "$BASHPID" >"$SELFTEST_DIR/hang.stage-pid"
  sh -c 'echo $$ >"$1.child-pid" && touch "$1.started" && exec sleep 60' sh "$SELFTEST_DIR/hang"
  touch "$SELFTEST_DIR/hang.finished"
}
# Each lane stage records when it started and ended, and prints three lines
# with a pause between them: a lane's output must come out in one piece.
stage_lane-a() {
  date +%s.%N >"$SELFTEST_DIR/lane-a.start"
  for i in 1 2 3; do echo "lane-a line $i"; sleep 0.5; done
  date +%s.%N >"$SELFTEST_DIR/lane-a.end"
}
stage_lane-b() {
  date +%s.%N >"$SELFTEST_DIR/lane-b.start"
  for i in 1 2 3; do echo "lane-b line $i"; sleep 0.5; done
  date +%s.%N >"$SELFTEST_DIR/lane-b.end"
  [ -z "${SELFTEST_LANE_B_FAILS:-}" ]
}
stage_hang-b() {
  echo "$BASHPID" >"$SELFTEST_DIR/hang-b.stage-pid"
  sh -c 'echo $$ >"$1.child-pid" && touch "$1.started" && exec sleep 60' sh "$SELFTEST_DIR/hang-b"
  touch "$SELFTEST_DIR/hang-b.finished"
}
stage_keep-volume() { docker volume create --label "$SELFTEST_LABEL" "$SELFTEST_VOLUME"; }
stage_drop-volume() {
  docker volume create --label "$SELFTEST_LABEL" "$SELFTEST_VOLUME" && docker volume rm "$SELFTEST_VOLUME"
}
stage_show-run() { echo "$DASK_SWARM_TEST_RUN" >"$SELFTEST_DIR/run-id"; }
# As a Molecule fleet of this run is labelled (extensions/molecule/resources/fleet.yml).
stage_run-volume() {
  mkdir -p "$DASK_SWARM_MOLECULE_DIR" && docker volume create --label dask_swarm.gateway.molecule=selftest \
    --label "dask_swarm.gateway.test-run=$DASK_SWARM_TEST_RUN" "$SELFTEST_VOLUME"
}
"""


def stage_names():
    return re.search(r"^ALL_STAGES=\((.*)\)$", STAGES, re.M).group(1).split()


def alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def recorded_pids(work):
    return [int(p.read_text()) for p in work.glob("*-pid") if p.read_text().strip()]


@pytest.fixture
def work(tmp_path):
    yield tmp_path
    # A broken runner may leave a stage's sleep behind: end those we started.
    for pid in recorded_pids(tmp_path):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start(work, *stages, **extra):
    (work / "stages.sh").write_text(STAGES)
    env = dict(
        os.environ,
        RUN_TESTS_STAGES_FILE=str(work / "stages.sh"),
        SELFTEST_DIR=str(work),
        # Where the runs keep their Molecule ephemeral directories.
        XDG_CACHE_HOME=str(work / "cache"),
    )
    # When run-tests.sh runs these tests, its run id must not reach the runs
    # they start: a real clean-up would select that run's objects.
    env.pop("DASK_SWARM_TEST_RUN", None)
    env.update(extra)
    # A session of its own, so that the guard can end everything it started.
    return subprocess.Popen(
        ["bash", str(SCRIPT), *stages],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc, timeout=GUARD):
    """The runner's exit code and output; fails the test if it hangs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"run-tests.sh still running after {timeout} s:\n{out}")
    return proc.returncode, out


def wait_until_started(proc, work, *stages, what):
    """Wait until each named stage has marked its start; fail with WHAT if the runner ends or the guard passes first."""
    deadline = time.monotonic() + GUARD
    while not all((work / f"{stage}.started").exists() for stage in stages):
        if proc.poll() is not None or time.monotonic() > deadline:
            rc, out = finish(proc)
            pytest.fail(f"{what} (rc {rc}):\n{out}")
        time.sleep(0.05)


def run(work, *stages, **env):
    began = time.monotonic()
    rc, out = finish(start(work, *stages, **env))
    return rc, out, time.monotonic() - began


def line(stage, result):
    return re.compile(rf"^==> {re.escape(stage)}: {re.escape(result)} in \d+ s$", re.M)


def test_stage_file_owns_no_real_kind():
    # molecule-* owns Molecule nodes, backend the backend's objects,
    # quickstart the sandbox: their clean-up and checks must never run here.
    for name in stage_names():
        assert not name.startswith("molecule") and name not in ("backend", "quickstart")


def test_all_pass(work):
    rc, out, _ = run(work, "setup", "pass")
    assert rc == 0, out
    assert line("setup", "PASS").search(out), out
    assert line("pass", "PASS").search(out), out
    assert "======== summary ========" in out
    assert out.rstrip().endswith("stages: 2 passed, 0 failed"), out
    assert (work / "cleanup-ran").exists()


def test_failure_does_not_stop_later_stages(work):
    rc, out, _ = run(work, "setup", "fail", "pass")
    assert rc != 0, out
    assert line("fail", "FAIL").search(out), out
    assert (work / "ran-pass").exists(), out
    assert line("pass", "PASS").search(out), out
    assert out.rstrip().endswith("stages: 2 passed, 1 failed"), out
    assert (work / "cleanup-ran").exists()


def test_the_summary_says_why_a_stage_failed(work):
    # CI may show only the end of the output: the reason must be there, under
    # the failed stage's line, and no passed stage gets one.
    rc, out, _ = run(work, "setup", "fail", "pass")
    assert rc != 0, out
    summary = out.split("======== summary ========", 1)[1]
    assert re.search(r"^fail +FAIL +\d+s\n    FAILED tests/test_x.py::test_y - AssertionError: the reason\n", summary, re.M), summary
    assert re.search(r"^pass +PASS +\d+s\nwall clock", summary, re.M), summary


def test_stage_past_its_limit_is_stopped(work):
    rc, out, took = run(work, "slow", "pass")
    assert rc != 0, out
    assert took < 20, f"took {took:.0f} s for a limit of 2 s:\n{out}"
    assert "run-tests: stage slow did not finish within its limit of 2 s" in out
    assert line("slow", "FAIL").search(out), out
    assert not (work / "slow.finished").exists()
    assert line("pass", "PASS").search(out), out
    assert out.rstrip().endswith("stages: 1 passed, 1 failed"), out
    for pid in recorded_pids(work):
        assert not alive(pid), f"stage process {pid} survived its limit"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_signal_stops_the_run(work, sig, code):
    proc = start(work, "hang", "pass")
    wait_until_started(proc, work, "hang", what="the hang stage never started")
    pids = recorded_pids(work)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    proc.send_signal(sig)
    rc, out = finish(proc)
    assert rc == code, out
    assert f"run-tests: interrupted by {sig.name}" in out
    assert not (work / "ran-pass").exists(), f"a stage ran after {sig.name}:\n{out}"
    assert not (work / "hang.finished").exists()
    assert (work / "cleanup-ran").exists(), out
    # Given a moment to be reaped, nothing of the stage may be left running.
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], f"stage processes survived {sig.name}"


def test_failed_setup_runs_nothing_else(work):
    rc, out, _ = run(work, "setup", "pass", "fail", SELFTEST_SETUP_FAILS="1")
    assert rc != 0, out
    assert line("setup", "FAIL").search(out), out
    assert line("pass", "NOT RUN (set-up failed)").search(out), out
    assert line("fail", "NOT RUN (set-up failed)").search(out), out
    assert not (work / "ran-pass").exists() and not (work / "ran-fail").exists()
    assert "======== summary ========" in out
    assert out.rstrip().endswith("stages: 0 passed, 3 failed"), out


def docker_volumes(label):
    return subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()


@pytest.fixture
def volume(work):
    """A label and volume name of this test's only; its volumes go afterwards."""
    # A real engine, never a skip: this stage runs after set-up started it.
    assert shutil.which("docker"), "no docker CLI: run the set-up stage first"
    version = subprocess.run(["docker", "version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, f"no Docker engine to leave a volume in: {version.stderr}"
    label = f"{LABEL_KEY}={uuid.uuid4().hex}"
    name = f"run-tests-selftest-{uuid.uuid4().hex[:12]}"
    try:
        yield {"SELFTEST_LABEL": label, "SELFTEST_VOLUME": name}
    finally:
        for left in docker_volumes(label):
            subprocess.run(["docker", "volume", "rm", left], capture_output=True, timeout=30)


def test_leftover_fails_the_run(work, volume):
    rc, out, _ = run(work, "keep-volume", **volume)
    assert line("keep-volume", "PASS").search(out), out
    assert rc != 0, out
    assert "run-tests: the tests left these behind" in out
    assert re.search(rf"^volume {volume['SELFTEST_VOLUME']}$", out, re.M), out
    assert docker_volumes(volume["SELFTEST_LABEL"]) == [volume["SELFTEST_VOLUME"]]


def test_removed_object_passes(work, volume):
    rc, out, _ = run(work, "drop-volume", **volume)
    assert rc == 0, out
    assert "left these behind" not in out
    assert out.rstrip().endswith("stages: 1 passed, 0 failed"), out
    assert docker_volumes(volume["SELFTEST_LABEL"]) == []


RUN_LABEL_KEY = "dask_swarm.gateway.test-run"


def test_the_run_id_reaches_the_stages(work):
    rc, out, _ = run(work, "show-run")
    assert rc == 0, out
    first = (work / "run-id").read_text().strip()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,23}", first), first
    rc, out, _ = run(work, "show-run")
    assert rc == 0, out
    assert (work / "run-id").read_text().strip() != first, "two runs got the same id"


def test_a_callers_run_id_is_kept(work):
    rc, out, _ = run(work, "show-run", DASK_SWARM_TEST_RUN="ci-4711")
    assert rc == 0, out
    assert (work / "run-id").read_text().strip() == "ci-4711"


def test_a_malformed_run_id_is_refused(work):
    rc, out, _ = run(work, "show-run", DASK_SWARM_TEST_RUN="CI run/1")
    assert rc == 2, out
    assert "DASK_SWARM_TEST_RUN=CI run/1: need 1-24 of a-z, 0-9, '-'" in out
    assert not (work / "run-id").exists()


@pytest.fixture
def two_runs(work):
    """Run ids of this test's only (no real fleet has them), and a volume of
    the other run, made before this run starts, as a concurrent run's is."""
    assert shutil.which("docker"), "no docker CLI: run the set-up stage first"
    ours, other = (f"selftest-{uuid.uuid4().hex[:12]}" for _ in range(2))
    other_volume = f"run-tests-selftest-{other}"
    subprocess.run(
        ["docker", "volume", "create", "--label", "dask_swarm.gateway.molecule=selftest",
         "--label", f"{RUN_LABEL_KEY}={other}", other_volume],
        capture_output=True, check=True, timeout=30,
    )
    try:
        yield {"ours": ours, "other": other, "volume": f"run-tests-selftest-{ours}", "other_volume": other_volume}
    finally:
        for run_id in (ours, other):
            for left in docker_volumes(f"{RUN_LABEL_KEY}={run_id}"):
                subprocess.run(["docker", "volume", "rm", left], capture_output=True, timeout=30)


def test_the_clean_up_leaves_another_runs_objects_alone(work, two_runs):
    rc, out, _ = run(
        work, "run-volume",
        DASK_SWARM_TEST_RUN=two_runs["ours"], SELFTEST_REAL_CLEANUP="1", SELFTEST_VOLUME=two_runs["volume"],
    )
    assert rc == 0, out
    assert line("run-volume", "PASS").search(out), out
    assert "left these behind" not in out
    # This run's own volume went with the clean-up, and its ephemeral directory.
    assert docker_volumes(f"{RUN_LABEL_KEY}={two_runs['ours']}") == []
    assert not (work / "cache" / "dask_swarm_gateway" / "molecule" / two_runs["ours"]).exists()
    assert (work / "cache" / "dask_swarm_gateway" / "molecule").is_dir(), "the stage made no ephemeral directory"
    assert docker_volumes(f"{RUN_LABEL_KEY}={two_runs['other']}") == [two_runs["other_volume"]]


def stamp(work, name):
    return float((work / name).read_text())


def test_lanes_run_side_by_side_and_print_each_stage_whole(work):
    # The set-up, then "lane-a fail pass" beside "lane-b slow show-run".
    rc, out, _ = run(work, SELFTEST_LANES="sides", SELFTEST_LANE_B_FAILS="1")
    assert (work / "ran-setup").exists(), out
    assert stamp(work, "lane-b.start") < stamp(work, "lane-a.end"), "lane-b waited for lane-a: no lanes side by side"
    assert stamp(work, "lane-a.start") < stamp(work, "lane-b.end"), "lane-a waited for lane-b: no lanes side by side"
    for lane in ("lane-a", "lane-b"):
        block = re.search(rf"^======== {lane} ========\n(.*?)^==> {lane}: ", out, re.S | re.M)
        assert block, out
        assert block.group(1) == "".join(f"{lane} line {i}\n" for i in (1, 2, 3)), out
    # A failure in each lane (fail; lane-b itself) stops neither.
    assert line("lane-b", "FAIL").search(out), out
    assert line("pass", "PASS").search(out), out
    assert (work / "ran-pass").exists() and (work / "ran-fail").exists()
    assert line("show-run", "PASS").search(out), out
    assert rc != 0, out
    assert re.search(r"^stages: \d+ passed, \d+ failed$", out, re.M), out
    # The summary lists the set-up and every lane's stages, in that order.
    summary = out.split("======== summary ========")[1]
    assert re.findall(r"^(\S+)\s+(?:PASS|FAIL)", summary, re.M)[:4] == ["setup", "lane-a", "fail", "pass"], summary


def test_a_failed_set_up_runs_no_lane(work):
    rc, out, _ = run(work, SELFTEST_LANES="short", SELFTEST_SETUP_FAILS="1")
    assert rc != 0, out
    assert line("setup", "FAIL").search(out), out
    assert line("lane-a", "NOT RUN (set-up failed)").search(out), out
    assert not (work / "lane-a.start").exists() and not (work / "ran-pass").exists()


def test_lanes_that_leave_out_a_stage_are_refused(work):
    rc, out, _ = run(work, SELFTEST_LANES="incomplete")
    assert rc == 2, out
    assert "run-tests: LANES must hold every stage of ALL_STAGES but setup, once" in out
    assert not (work / "ran-setup").exists(), out


def test_lanes_whose_limits_add_up_past_the_run_limit_are_refused(work):
    # setup 20 + lane-a 20 + pass 20 s, against a RUN_LIMIT of 39 s.
    rc, out, _ = run(work, SELFTEST_LANES="too-long")
    assert rc == 2, out
    assert "run-tests: the limits of setup and the lane 'lane-a pass' add up to 60 s, over RUN_LIMIT (39 s)" in out
    assert not (work / "ran-setup").exists(), out


def test_the_projects_lanes_hold_every_stage_and_fit_the_run_limit(work):
    # The real ALL_STAGES, LANES, LIMIT and RUN_LIMIT, with no-op stages.
    rc, out, _ = run(work, SELFTEST_REAL_LANES="1")
    assert rc == 0, out
    assert re.search(r"^stages: (\d+) passed, 0 failed$", out, re.M), out
    for name in re.findall(r"^==> (\S+): PASS in \d+ s$", out, re.M):
        assert f"ran {name}" in out


def test_a_signal_stops_every_lane(work):
    proc = start(work, SELFTEST_LANES="hang")
    wait_until_started(proc, work, "hang", "hang-b", what="the two hanging stages never ran side by side")
    pids = recorded_pids(work)
    assert len(pids) == 4 and all(alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    rc, out = finish(proc)
    assert rc == 143, out
    assert "run-tests: interrupted by SIGTERM" in out
    assert not (work / "ran-pass").exists() and not (work / "run-id").exists(), f"a stage ran after TERM:\n{out}"
    assert not (work / "hang.finished").exists() and not (work / "hang-b.finished").exists()
    assert (work / "cleanup-ran").exists(), out
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "stage processes survived TERM"
