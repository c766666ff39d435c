"""meta/runtime.yml: the ansible-core versions claimed are the ones tested, and
the action groups configure every module of the collection."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUNTIME = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def sanity_versions():
    """The ansible-core versions tests/sanity has an ignore file for (each is a
    version `ansible-test sanity` runs with)."""
    versions = []
    for path in (ROOT / "tests" / "sanity").glob("ignore-*.txt"):
        match = re.fullmatch(r"ignore-(\d+\.\d+)\.txt", path.name)
        assert match, f"{path.name}: not ignore-<major>.<minor>.txt"
        versions.append(match.group(1))
    assert versions, "tests/sanity has no ignore-<version>.txt"
    return sorted(versions, key=lambda v: tuple(int(n) for n in v.split(".")))


def test_there_are_modules():
    assert {"gateway_check", "swarm_status"} <= set(MODULES)


def test_requires_ansible_is_the_oldest_tested_version():
    assert RUNTIME["requires_ansible"] == f">={sanity_versions()[0]}.0"


def test_every_module_is_in_the_action_group_of_what_it_talks_to():
    groups = RUNTIME["action_groups"]
    assert all(isinstance(name, str) for group in groups.values() for name in group), groups
    assert sorted(groups["gateway"]) == [m for m in MODULES if not m.startswith("registry_")]
    assert sorted(groups["registry"]) == [m for m in MODULES if m.startswith("registry_")]


def test_module_defaults_of_the_group_reach_every_module(tmp_path):
    """Through ansible-playbook: the group's defaults fill in each module's
    options (no Docker daemon, no gateway: both point at nothing)."""
    socket = tmp_path / "no-docker.sock"
    playbook = tmp_path / "defaults.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Module defaults through the action group",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "module_defaults": {
                        # The options both modules have.
                        "group/dask_swarm.gateway.gateway": {"timeout": 7, "validate_certs": True},
                    },
                    "tasks": [
                        {
                            "name": "gateway_check",
                            "dask_swarm.gateway.gateway_check": {"address": "http://127.0.0.1:9", "password": "x"},
                            "ignore_errors": True,
                        },
                        {
                            "name": "swarm_status",
                            "dask_swarm.gateway.swarm_status": {"docker_host": f"unix://{socket}"},
                            "ignore_errors": True,
                        },
                    ],
                }
            ]
        )
    )
    out = subprocess.run(
        # -vvv: only then do results carry their invocation (the module's options).
        [str(BIN / "ansible-playbook"), "-vvv", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The json callback's document follows -vvv's preamble.
    tasks = json.loads(out.stdout[out.stdout.index("\n{\n") :])["plays"][0]["tasks"]
    results = {name: task["hosts"]["localhost"] for name, task in zip(("gateway", "swarm"), tasks, strict=True)}
    # The group's values, not the modules' own defaults (timeout: 120 and 60;
    # swarm_status's validate_certs: false).
    for result in results.values():
        assert result["failed"], result
        assert "Unsupported parameters" not in result["msg"], result["msg"]
        args = result["invocation"]["module_args"]
        assert (args["timeout"], args["validate_certs"]) == (7, True), args
    assert results["gateway"]["invocation"]["module_args"]["address"] == "http://127.0.0.1:9"
    assert results["swarm"]["invocation"]["module_args"]["docker_host"] == f"unix://{socket}"
