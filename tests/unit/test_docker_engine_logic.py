# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The docker_engine role decides right on files that stand in for a node's.

Each fixture runs the role's own task files (detect, raspberry_pi, validate,
docker_ce_repo) with ansible-playbook, once for a whole table of cases: every
case is a host of its own on the local connection, with its own directory of
files. The kernel's and the boot partition's paths are private role vars, which
only extra vars outrank, so the extra vars point them into that directory.
Nothing outside pytest's tmp_path is written, no engine is asked anything (a
stand-in `docker` answers), and the reboot cases run in check mode only.
"""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ROLE = "dask_swarm.gateway.docker_engine"
ROLE_DIR = ROOT / "roles" / "docker_engine"

# Raspberry Pi OS's cmdline.txt, and the same once memory cgroups are enabled.
BOOT = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
FLAGS = "cgroup_enable=memory cgroup_memory=1"
BOOT_WITH_FLAGS = BOOT.rstrip("\n") + " " + FLAGS + "\n"
# /proc/cmdline: the firmware adds words of its own in front.
RUNNING = "coherent_pool=1M 8250.nr_uarts=0 bcm2708_fb.fbwidth=0 " + BOOT
RUNNING_WITH_FLAGS = "coherent_pool=1M 8250.nr_uarts=0 bcm2708_fb.fbwidth=0 " + BOOT_WITH_FLAGS

WARNING_TASK = "Warn that memory limits are ignored until the next reboot"
REBOOT_TASK = "Reboot so that the kernel enables memory cgroups"
EDIT_TASK = "Enable memory cgroups on the kernel command line"

# Taken from main.yml rather than copied, so the detection cases check the
# decision the role really makes.
PI_DECISION = next(
    task["when"]
    for task in yaml.safe_load((ROLE_DIR / "tasks" / "main.yml").read_text())
    if task.get("ansible.builtin.include_tasks") == "raspberry_pi.yml"
)


class Run:
    """One ansible-playbook run, read from the ansible.posix.json callback."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.text = proc.stdout + proc.stderr
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"ansible-playbook printed no JSON (rc {self.rc}):\n{self.text}")
        self.stats = data["stats"]
        self.results = {}
        for play in data["plays"]:
            for task in play["tasks"]:
                name = task["task"]["name"].split(" : ", 1)[-1]
                for host, result in task["hosts"].items():
                    self.results.setdefault(host, {})[name] = result

    def result(self, host, task):
        results = self.results.get(host, {})
        assert task in results, f"{host}: no result for {task!r}; got {sorted(results)}\n{self.text}"
        return results[task]

    def failed(self, host):
        """The tasks that failed on host, ignored failures included."""
        return {name for name, result in self.results.get(host, {}).items() if result.get("failed")}


def ansible_playbook(workdir, plays, hosts, extra_vars, *options):
    """Run plays on hosts, each on the local connection with its host vars."""
    workdir.mkdir(parents=True, exist_ok=True)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"hosts": {name: {**host_vars, **local} for name, host_vars in hosts.items()}}}
    (workdir / "hosts.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    (workdir / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    (workdir / "extra_vars.json").write_text(json.dumps(extra_vars), encoding="utf-8")
    # detect.yml asks `docker version`: answer "no engine" without touching
    # the machine's real one.
    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    env = dict(
        os.environ,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(workdir / "ansible-remote"),
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
    )
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(workdir / "hosts.yml"), "-e", f"@{workdir / 'extra_vars.json'}",
         *options, str(workdir / "play.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    return Run(proc)


def role_play(tasks_from, pre_tasks=(), post_tasks=(), apply=None):
    include = {"name": ROLE, "tasks_from": tasks_from}
    if apply:
        include["apply"] = apply
    return {
        "name": f"Run {tasks_from} of the role",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [*pre_tasks, {"name": f"Include {tasks_from}", "ansible.builtin.include_role": include}, *post_tasks],
    }


def write_files(case_dir, files):
    for relative, text in files.items():
        path = case_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if path.name == "cmdline.txt":
            # What a FAT boot partition shows, and not what a new file gets.
            path.chmod(0o755)


def snapshot(directory):
    """Each file's mode and bytes."""
    return {
        str(p.relative_to(directory)): (oct(p.stat().st_mode & 0o7777), p.read_bytes())
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


# --- Raspberry Pi detection ------------------------------------------------

DETECT_CASES = {
    # case: (model file, host vars, detected, raspberry_pi.yml runs)
    "pi4": ("Raspberry Pi 4 Model B Rev 1.4\x00", {}, True, True),
    "generic-board": ("Generic x86 board\x00", {}, False, False),
    "no-model-file": (None, {}, False, False),
    "set-false-on-a-pi": ("Raspberry Pi 4 Model B Rev 1.4\x00", {"docker_engine_raspberry_pi": False}, None, False),
    "set-true-elsewhere": ("Generic x86 board\x00", {"docker_engine_raspberry_pi": True}, None, True),
}


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    hosts = {}
    for case, (model, host_vars, _, _) in DETECT_CASES.items():
        (root / case).mkdir()
        if model is not None:
            (root / case / "model").write_bytes(model.encode())
        hosts[case] = {"case_dir": str(root / case), **host_vars}
    decide = {"name": "Decide as main.yml does",
              "ansible.builtin.set_fact": {"case_runs_pi_tasks": f"{{{{ {PI_DECISION} }}}}"}}
    extra = {"__docker_engine_model_path": "{{ case_dir }}/model", "__docker_engine_marker": "{{ case_dir }}/marker"}
    return ansible_playbook(root / "run", [role_play("detect.yml", post_tasks=[decide])], hosts, extra)


@pytest.mark.parametrize("case", DETECT_CASES)
def test_a_raspberry_pi_is_told_from_its_board_model(detect_run, case):
    _, host_vars, detected, runs_pi_tasks = DETECT_CASES[case]
    assert detect_run.failed(case) == set(), detect_run.text
    if "docker_engine_raspberry_pi" in host_vars:
        # Set explicitly: the model file is not even read.
        assert detect_run.result(case, "Look for a Raspberry Pi board").get("skipped"), detect_run.text
        assert detect_run.result(case, "Read the board model").get("skipped"), detect_run.text
    else:
        fact = detect_run.result(case, "Remember whether this is a Raspberry Pi")["ansible_facts"]
        assert fact["__docker_engine_detected_pi"] is detected
    assert detect_run.result(case, "Decide as main.yml does")["ansible_facts"]["case_runs_pi_tasks"] is runs_pi_tasks


# --- Kernel command line: search, edit, warning ------------------------------

PI_CASES = {
    # case: (files before, host vars relative to the case directory)
    "both-exist": ({"firmware/cmdline.txt": BOOT, "cmdline.txt": BOOT}, {}),
    "only-the-second-exists": ({"cmdline.txt": BOOT}, {}),
    "none-exists": ({}, {}),
    "path-set": ({"firmware/cmdline.txt": BOOT, "cmdline.txt": BOOT, "custom/cmdline.txt": BOOT},
                 {"docker_engine_cmdline_path": "custom/cmdline.txt"}),
    "path-set-but-missing": ({"firmware/cmdline.txt": BOOT}, {"docker_engine_cmdline_path": "custom/cmdline.txt"}),
    "one-flag-present": ({"firmware/cmdline.txt": "console=tty1 cgroup_memory=1 rootwait\n"}, {}),
    "flags-present-not-rebooted": ({"firmware/cmdline.txt": BOOT_WITH_FLAGS}, {}),
    "flags-present-rebooted": ({"firmware/cmdline.txt": BOOT_WITH_FLAGS, "proc_cmdline": RUNNING_WITH_FLAGS}, {}),
}
EDITED = {
    # case: (the file edited, the flags it gains); every other file is kept
    "both-exist": ("firmware/cmdline.txt", FLAGS.split()),
    "only-the-second-exists": ("cmdline.txt", FLAGS.split()),
    "path-set": ("custom/cmdline.txt", FLAGS.split()),
    "one-flag-present": ("firmware/cmdline.txt", ["cgroup_enable=memory"]),
}
UNTOUCHED = ["flags-present-not-rebooted", "flags-present-rebooted"]
NOT_FOUND = {"none-exists": ["firmware/cmdline.txt", "cmdline.txt"], "path-set-but-missing": ["custom/cmdline.txt"]}

# Candidates and the running command line, per case directory.
PI_EXTRA_VARS = {
    "__docker_engine_cmdline_candidates": ["{{ case_dir }}/firmware/cmdline.txt", "{{ case_dir }}/cmdline.txt"],
    "__docker_engine_running_cmdline_path": "{{ case_dir }}/proc_cmdline",
}


def pi_hosts(root, cases):
    hosts = {}
    for case, (files, host_vars) in cases.items():
        case_dir = root / case
        case_dir.mkdir()
        write_files(case_dir, {"proc_cmdline": RUNNING, **files})
        hosts[case] = {"case_dir": str(case_dir), **{k: str(case_dir / v) for k, v in host_vars.items()}}
    return hosts


@pytest.fixture(scope="module")
def pi_runs(tmp_path_factory):
    """The raspberry_pi.yml cases run twice, with the files after each run."""
    root = tmp_path_factory.mktemp("pi")
    hosts = pi_hosts(root, PI_CASES)
    before = {case: snapshot(root / case) for case in PI_CASES}
    # Belt and braces: the reboot task must stay skipped outside check mode.
    extra = {**PI_EXTRA_VARS, "docker_engine_reboot_allowed": False}
    first = ansible_playbook(root / "run1", [role_play("raspberry_pi.yml")], hosts, extra)
    after_first = {case: snapshot(root / case) for case in PI_CASES}
    second = ansible_playbook(root / "run2", [role_play("raspberry_pi.yml")], hosts, extra)
    after_second = {case: snapshot(root / case) for case in PI_CASES}
    return root, first, second, before, after_first, after_second


@pytest.mark.parametrize("case", EDITED)
def test_the_first_cmdline_file_found_gets_the_flags_once(pi_runs, case):
    root, first, _, before, after, _ = pi_runs
    edited, added = EDITED[case]
    assert first.failed(case) == set(), first.text
    assert first.result(case, EDIT_TASK)["changed"] is True
    assert first.result(case, EDIT_TASK)["dest"] == str(root / case / edited)
    mode, text = after[case][edited]
    assert mode == oct(0o755)
    # One line, as the firmware reads it.
    assert text.endswith(b"\n") and text.count(b"\n") == 1, text
    # The board's words first and in order, then each missing flag once. The
    # role appends them in the order of a set (ansible's difference filter),
    # which the kernel does not mind and each run may change.
    kept = before[case][edited][1].split()
    assert text.split()[:len(kept)] == kept
    assert sorted(text.split()[len(kept):]) == sorted(word.encode() for word in added)
    # Only that file changed, and none was created.
    assert {k: v for k, v in after[case].items() if k != edited} == {k: v for k, v in before[case].items() if k != edited}


@pytest.mark.parametrize("case", NOT_FOUND)
def test_no_cmdline_file_fails_naming_docker_engine_cmdline_path(pi_runs, case):
    root, first, _, before, after, _ = pi_runs
    paths = ", ".join(str(root / case / p) for p in NOT_FOUND[case])
    assert first.failed(case) == {"Check a kernel command line file was found"}, first.text
    assert first.result(case, "Check a kernel command line file was found")["msg"] == (
        f"{case} is treated as a Raspberry Pi, but none of {paths} exists. Set docker_engine_cmdline_path "
        "to the board's cmdline.txt, or docker_engine_raspberry_pi: false."
    )
    assert first.stats[case]["changed"] == 0
    assert after[case] == before[case]


@pytest.mark.parametrize("case", UNTOUCHED)
def test_flags_already_present_leave_the_file_untouched(pi_runs, case):
    _, first, _, before, after, _ = pi_runs
    assert first.failed(case) == set(), first.text
    assert first.result(case, EDIT_TASK)["changed"] is False
    assert first.stats[case]["changed"] == 0
    assert after[case] == before[case]


@pytest.mark.parametrize("case", [c for c in PI_CASES if c not in NOT_FOUND])
def test_a_second_run_changes_nothing(pi_runs, case):
    _, _, second, _, after_first, after_second = pi_runs
    assert second.failed(case) == set(), second.text
    assert second.stats[case]["changed"] == 0, second.result(case, EDIT_TASK)
    assert after_second[case] == after_first[case]


@pytest.mark.parametrize(
    "case, warned",
    [("both-exist", True), ("flags-present-not-rebooted", True), ("flags-present-rebooted", False)],
)
def test_memory_limits_are_said_to_be_ignored_until_the_kernel_has_the_flags(pi_runs, case, warned):
    root, first, second, *_ = pi_runs
    for run in (first, second):
        warning = run.result(case, WARNING_TASK)
        assert run.result(case, REBOOT_TASK).get("skipped"), run.text
        if warned:
            assert not warning.get("skipped"), run.text
            assert warning["msg"] == (
                f"WARNING: {case} runs without memory cgroups. Memory limits of Dask workers are IGNORED on this "
                f"node until it reboots ({root / case / 'firmware/cmdline.txt'} now enables them). Reboot it, or "
                "set docker_engine_reboot_allowed: true to let this role reboot it."
            )
        else:
            assert warning.get("skipped"), warning


# --- Reboot: check mode only ------------------------------------------------

REBOOT_CASES = {
    # case: (cmdline.txt before, reboot allowed, reboot task reached)
    "allowed-and-changed": (BOOT, True, True),
    "allowed-but-unchanged": (BOOT_WITH_FLAGS, True, False),
    "not-allowed-and-changed": (BOOT, False, False),
}


@pytest.fixture(scope="module")
def reboot_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reboot")
    hosts = pi_hosts(root, {case: ({"firmware/cmdline.txt": text}, {}) for case, (text, _, _) in REBOOT_CASES.items()})
    for case, (_, allowed, _) in REBOOT_CASES.items():
        hosts[case]["docker_engine_reboot_allowed"] = allowed
        # Never anything but the local connection, which ansible refuses to
        # reboot, and never without --check.
        assert "ansible_connection" not in hosts[case]
    before = {case: snapshot(root / case) for case in REBOOT_CASES}
    # ansible's reboot action refuses the local connection before it looks at
    # check mode (plugins/action/reboot.py); ignoring that refusal lets the
    # play go on to the warning.
    play = role_play("raspberry_pi.yml", apply={"ignore_errors": True})
    run = ansible_playbook(root / "run", [play], hosts, PI_EXTRA_VARS, "--check")
    return run, before, {case: snapshot(root / case) for case in REBOOT_CASES}


@pytest.mark.parametrize("case", REBOOT_CASES)
def test_a_reboot_is_scheduled_only_when_allowed_and_the_file_changed(reboot_run, case):
    run, before, after = reboot_run
    cmdline, _, reached = REBOOT_CASES[case]
    reboot = run.result(case, REBOOT_TASK)
    warning = run.result(case, WARNING_TASK)
    assert run.result(case, EDIT_TASK)["changed"] is (cmdline != BOOT_WITH_FLAGS)
    if reached:
        # Not skipped: on a real node this reboots. Here the local connection's
        # refusal is the only failure, and check mode would not reboot either.
        assert run.failed(case) == {REBOOT_TASK}, run.text
        assert reboot["msg"] == "Running ansible.builtin.reboot with local connection would reboot the control node."
        assert reboot["rebooted"] is False
        assert warning.get("skipped"), warning
    else:
        assert run.failed(case) == set(), run.text
        assert reboot.get("skipped"), reboot
        assert not warning.get("skipped"), warning
        assert "Memory limits of Dask workers are IGNORED" in warning["msg"]
    assert after[case] == before[case], "check mode wrote a file"


# --- validate.yml ---------------------------------------------------------

DEBIAN = {"os_family": "Debian", "distribution": "Debian", "distribution_release": "bookworm", "architecture": "x86_64"}
VALIDATE_CASES = {
    # case: (facts, host vars, failure message or None)
    "live-restore-on": (DEBIAN, {"docker_engine_daemon_options": {"live-restore": True}},
                        'docker_engine_daemon_options sets "live-restore": true, which Docker Swarm refuses to run '
                        "with. Remove it from docker_engine_daemon_options."),
    "live-restore-off": (DEBIAN, {"docker_engine_daemon_options": {"live-restore": False}}, None),
    "docker-ce-on-riscv64": ({**DEBIAN, "architecture": "riscv64"}, {"docker_engine_source": "docker_ce"},
                             "docker_engine_source is docker_ce, but Docker publishes no packages for riscv64. "
                             "Use docker_engine_source: distro."),
    "distro-on-riscv64": ({**DEBIAN, "architecture": "riscv64"}, {"docker_engine_source": "distro"}, None),
    "docker-ce-on-aarch64": ({**DEBIAN, "architecture": "aarch64"}, {"docker_engine_source": "docker_ce"}, None),
    "fedora": ({"os_family": "RedHat", "distribution": "Fedora", "distribution_release": "40", "architecture": "x86_64"},
               {}, "docker_engine supports Debian, Ubuntu, Raspbian; fedora runs Fedora 40."),
}


VALIDATE_TASKS = [task["name"] for task in yaml.safe_load((ROLE_DIR / "tasks" / "validate.yml").read_text())]


@pytest.fixture(scope="module")
def validate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    hosts = {case: {"case_facts": facts, **host_vars} for case, (facts, host_vars, _) in VALIDATE_CASES.items()}
    set_facts = {"name": "Stand in for gathered facts", "ansible.builtin.set_fact": {"ansible_facts": "{{ case_facts }}"}}
    return ansible_playbook(root / "run", [role_play("validate.yml", pre_tasks=[set_facts])], hosts, {})


@pytest.mark.parametrize("case", VALIDATE_CASES)
def test_validate_refuses_what_swarm_or_docker_cannot_run(validate_run, case):
    message = VALIDATE_CASES[case][2]
    if message is None:
        assert validate_run.failed(case) == set(), validate_run.text
        # Every check was reached and let the case through.
        for task in VALIDATE_TASKS:
            assert validate_run.result(case, task).get("msg", "All assertions passed") == "All assertions passed"
    else:
        [failed] = validate_run.failed(case)
        assert validate_run.result(case, failed)["msg"] == message


# --- docker_ce_repo.yml for Ubuntu ------------------------------------------

APT_DIRS = [Path("/etc/apt/sources.list.d"), Path("/etc/apt/keyrings")]


def apt_state():
    return {str(d): snapshot(d) if d.is_dir() else None for d in APT_DIRS}


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    """An ASCII-armored public key, made in a keyring of its own."""
    assert shutil.which("gpg"), "gpg is not installed (Debian's gnupg package)"
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    try:
        subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
             "dask_swarm.gateway test <test@example.invalid>", "ed25519", "sign", "1d"],
            env=env, check=True, capture_output=True, timeout=60,
        )
        key = subprocess.run(["gpg", "--armor", "--export"], env=env, check=True, capture_output=True, timeout=60).stdout
    finally:
        # Only the agent this keyring started.
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=60)
    assert key.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    return key


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requested.append(self.path)


@pytest.fixture(scope="module")
def docker_mirror(tmp_path_factory, signing_key):
    """A mirror of Docker's repository on 127.0.0.1, holding only the key."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "linux" / "ubuntu").mkdir(parents=True)
    (root / "linux" / "ubuntu" / "gpg").write_bytes(signing_key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root)))
    server.requested = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/linux", server.requested
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def repo_run(tmp_path_factory, docker_mirror):
    url, requested = docker_mirror
    root = tmp_path_factory.mktemp("repo")
    facts = {"os_family": "Debian", "distribution": "Ubuntu", "distribution_release": "noble", "architecture": "aarch64"}
    hosts = {"ubuntu-noble": {"case_facts": facts, "docker_engine_source": "docker_ce",
                              "docker_engine_docker_ce_url": url, "docker_engine_docker_ce_channel": "test"}}
    set_facts = {"name": "Stand in for gathered facts", "ansible.builtin.set_fact": {"ansible_facts": "{{ case_facts }}"}}
    before = apt_state()
    run = ansible_playbook(root / "run", [role_play("docker_ce_repo.yml", pre_tasks=[set_facts])], hosts, {},
                           "--check", "--diff")
    return run, url, requested, before, apt_state()


REPO_TASK = "Add Docker's apt repository and its signing key"


def test_the_docker_ce_source_is_asked_for_ubuntu_s_names(repo_run):
    run, url, _, before, after = repo_run
    result = run.result("ubuntu-noble", REPO_TASK)
    if result.get("failed"):
        # Without python-debian the module stops before it fetches or writes
        # anything, after the role has rendered its arguments.
        assert "python3-debian" in result["msg"], run.text
    args = result["invocation"]["module_args"]
    assert (args["name"], args["types"]) == ("docker", ["deb"])
    assert args["uris"] == [f"{url}/ubuntu"]
    assert args["suites"] == ["noble"]
    assert args["components"] == ["test"]
    assert args["architectures"] == ["arm64"]
    assert args["signed_by"] == f"{url}/ubuntu/gpg"
    assert after == before, "check mode wrote under /etc/apt"
