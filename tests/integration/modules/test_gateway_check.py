"""gateway_check against a REAL dask-gateway-server (local-process backend).

The test starts dask-gateway-server from this Python environment on
127.0.0.1 with a free port, SimpleAuthenticator and a generated password,
and runs the module through the ``ansible`` command line exactly as a user
would. Nothing here is faked. Runtime: about 40 s.

    .venv/bin/pytest -q tests/integration/modules/test_gateway_check.py
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_server import DASK, SERVER

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ANSIBLE = BIN / "ansible"
MODULE = "dask_swarm.gateway.gateway_check"


@pytest.fixture(autouse=True, scope="module")
def _tools_installed():
    missing = [str(tool) for tool in (ANSIBLE, SERVER, DASK) if not tool.exists()]
    assert not missing, "not installed (make setup installs requirements.txt): %s" % ", ".join(missing)


def ansible_env(**extra):
    env = dict(
        os.environ,
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH="%s:%s" % (BIN, os.environ.get("PATH", "")),
    )
    env.update(extra)
    return env


# Each scenario is one task of one playbook run (ansible itself takes seconds
# to start on a small machine). The password reaches the tasks only through
# an environment lookup, as a vault or secret store would hand it over.
SCENARIOS = {
    "check_mode": {"check_mode": True, "args": {"username": "alice"}},
    "full": {
        "args": {
            "username": "ansible-check",
            "cluster_options": {"worker_cores": 1},
            "workers": 2,
            "timeout": 60,
            "min_distinct_nodes": 1,
            "expect_worker_nodes": [socket.gethostname()],
        }
    },
    "wrong_password": {"args": {"username": "alice", "timeout": 20}, "password_env": "GWC_WRONG_PASSWORD"},
    "placement": {
        "args": {"username": "alice", "workers": 2, "min_distinct_nodes": 2, "check_dashboard": False, "timeout": 60}
    },
    "unknown_option": {"args": {"cluster_options": {"gpus": 1}, "timeout": 20}},
    # HTTPS, check mode: the TLS options decide whether the client trusts the gateway.
    "tls_with_ca": {"tls": True, "check_mode": True, "args": {"ca_path": "CA_FILE"}},
    "tls_untrusted": {"tls": True, "check_mode": True, "args": {"timeout": 20}},
    "tls_unverified": {"tls": True, "check_mode": True, "args": {"validate_certs": False}},
}


@pytest.fixture(scope="module")
def playbook_run(server, tls_server, tmp_path_factory):
    """Run every scenario in one playbook with -v; return (rc, output, results, wrong password)."""
    workdir = tmp_path_factory.mktemp("playbook")
    tasks = []
    for name, scenario in SCENARIOS.items():
        target = tls_server if scenario.get("tls") else server
        args = dict(scenario["args"], address=target.address)
        if args.get("ca_path") == "CA_FILE":
            args["ca_path"] = target.ca_file
        password_env = "GWC_TLS_PASSWORD" if scenario.get("tls") else "GWC_PASSWORD"
        args["password"] = "{{ lookup('ansible.builtin.env', '%s') }}" % scenario.get("password_env", password_env)
        task = {
            "name": "Scenario " + name,
            MODULE: args,
            "register": "r_" + name,
            "ignore_errors": True,
        }
        if scenario.get("check_mode"):
            task["check_mode"] = True
        tasks.append(task)
        if name == "check_mode":
            tasks.append(
                {
                    "name": "Count the clusters the server created so far",
                    "ansible.builtin.command": {"argv": ["grep", "-c", "Created cluster", str(server.log)]},
                    "register": "r_created_after_check",
                    "changed_when": False,
                    "failed_when": False,
                }
            )
    fields = ", ".join("%s=r_%s" % (name, name) for name in SCENARIOS)
    content = "{{ dict(%s, created_after_check=r_created_after_check.stdout) | to_json }}" % fields
    tasks.append(
        {
            "name": "Save the results",
            "ansible.builtin.copy": {
                "content": content,
                "dest": str(workdir / "results.json"),
                "mode": "0600",
            },
        }
    )
    playbook = workdir / "check.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1))
    wrong = "wrong-" + secrets.token_urlsafe(12)
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), "-v"],
        cwd=str(ROOT),
        env=ansible_env(GWC_PASSWORD=server.password, GWC_TLS_PASSWORD=tls_server.password, GWC_WRONG_PASSWORD=wrong),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert (workdir / "results.json").exists(), output
    data = json.loads((workdir / "results.json").read_text())
    return proc.returncode, output, data, wrong


def test_full_check_passes(server, playbook_run):
    _, output, results, _ = playbook_run
    result = results["full"]
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    steps = ["connect", "options", "create", "scale", "compute", "versions", "placement", "dashboard", "shutdown"]
    assert [s["name"] for s in result["steps"]] == steps
    assert all(s["ok"] for s in result["steps"])
    assert set(result["timings"]) == set(steps)
    # Each step is timed; how fast is the benchmarks' business, not a test's.
    assert all(isinstance(v, float) and v >= 0 for v in result["timings"].values())
    assert isinstance(result["total_seconds"], float) and result["total_seconds"] > 0
    assert result["worker_count"] == 2
    assert result["computation"]["result"] == result["computation"]["expected"] == sum(i * i for i in range(200))
    assert result["versions"]["distributed"]["client"] == result["versions"]["distributed"]["scheduler"]
    assert result["distinct_nodes"] == 1
    assert [w["hostname"] for w in result["workers"]] == [socket.gethostname()] * 2
    assert result["dashboard_status"] == 200
    assert result["cluster_options"] == {"worker_cores": 1, "profile": "small"}
    assert result["cleanup"] == {"cluster": result["cluster_name"], "stopped": True, "error": None}
    assert server.clusters() == {}
    # the success output printed with -v
    assert "Scenario full" in output and '"distinct_nodes": 1' in output


def test_wrong_password_fails_at_connect(playbook_run):
    _, _, results, _ = playbook_run
    result = results["wrong_password"]
    assert result["failed"] is True
    assert result["failed_step"] == "connect"
    assert result["msg"].startswith("step connect: the gateway refused the credentials (HTTP 401"), result["msg"]
    assert [s["name"] for s in result["steps"]] == ["connect"]


def test_check_mode_creates_no_cluster(playbook_run):
    _, _, results, _ = playbook_run
    result = results["check_mode"]
    assert not result.get("failed"), result.get("msg")
    assert [s["name"] for s in result["steps"]] == ["connect"]
    assert result["clusters"] == []
    assert "cluster_name" not in result
    # the server log counted no "Created cluster" right after the check-mode task
    assert results["created_after_check"] == "0"


def test_failed_placement_still_removes_the_cluster(server, playbook_run):
    # One machine cannot give two distinct nodes: step placement fails after
    # the cluster exists, and the module must stop it anyway.
    _, _, results, _ = playbook_run
    result = results["placement"]
    assert result["failed_step"] == "placement"
    assert result["msg"] == "step placement: workers ran on 1 distinct node [%s (2)], at least 2 expected" % socket.gethostname()
    assert result["cleanup"]["stopped"] is True
    assert server.clusters() == {}


def test_unknown_cluster_option_names_the_offered_ones(playbook_run):
    _, _, results, _ = playbook_run
    result = results["unknown_option"]
    assert result["msg"] == "step options: ValueError: the gateway offers no option gpus (it offers: profile, worker_cores)"
    assert "cleanup" not in result


def test_https_with_the_gateway_ca(playbook_run):
    result = playbook_run[2]["tls_with_ca"]
    assert not result.get("failed"), result.get("msg")
    assert result["clusters"] == []


def test_https_with_an_untrusted_certificate_fails_at_connect(playbook_run):
    result = playbook_run[2]["tls_untrusted"]
    assert result["failed_step"] == "connect"
    assert "certificate verify failed" in result["msg"], result["msg"]


def test_https_without_verification(playbook_run):
    result = playbook_run[2]["tls_unverified"]
    assert not result.get("failed"), result.get("msg")


def test_password_appears_nowhere(server, tls_server, playbook_run):
    rc, output, results, wrong = playbook_run
    assert rc == 0, output  # every scenario ignores its errors; the playbook itself passes
    assert "ok=" in output and "ignored=4" in output, output[-2000:]
    assert server.password not in output and tls_server.password not in output
    assert wrong not in output
    assert server.password not in json.dumps(results)


def test_ad_hoc_command_in_check_mode(server):
    """The command line the issue names: ``ansible localhost -m ... --check``, at -vvv."""
    args = {"address": server.address, "username": "alice", "password": server.password}
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args), "--check", "-vvv"],
        cwd=str(ROOT),
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    match = re.search(r"localhost \| SUCCESS => (\{.*\})", proc.stdout, re.S)
    assert match, output
    result = json.loads(match.group(1))
    assert [s["name"] for s in result["steps"]] == ["connect"]
    # -vvv prints the module's invocation; no_log masks the password there
    assert server.password not in output
