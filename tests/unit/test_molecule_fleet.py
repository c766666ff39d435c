"""Molecule fleets of two test runs on one engine do not collide.

fleet.yml's names and labels are rendered by a real ansible-playbook on
localhost (nothing is created): without DASK_SWARM_TEST_RUN they are today's
(a developer's `molecule test -s default`), with it every name carries the
run id and every object the run label; a fleet outside Molecule (the
sandbox) is unchanged either way. The scenarios' molecule.yml files go
through Molecule's own interpolation: the published gateway port and
gateway_public_url follow DASK_SWARM_TEST_PORT_<SCENARIO>, with today's
ports as defaults.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
# Not molecule.config: importing it sets ANSIBLE_FORCE_COLOR=1 in this process,
# and later tests that read ansible's output would get colour codes.
from molecule.interpolation import Interpolator, TemplateWithDefaults

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "extensions" / "molecule" / "resources"
# molecule.config.MOLECULE_KEEP_STRING: variables Molecule itself fills in later.
MOLECULE_KEEP_STRING = "MOLECULE_"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLATFORMS = [{"name": "manager1", "groups": ["swarm_managers"]}, {"name": "worker1"}]


def render_fleet(tmp_path, env, **extra_vars):
    """fleet.yml's name, nodes and labels, as create.yml and destroy.yml see them."""
    out = tmp_path / "fleet.json"
    playbook = [{
        "name": "Render the fleet",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(RESOURCES / "node.yml"), str(RESOURCES / "fleet.yml")],
        "tasks": [{
            "name": "Write it",
            "ansible.builtin.copy": {
                "content": "{{ {'name': __fleet_name, 'network': __fleet_network,"
                           " 'nodes': __fleet_nodes, 'labels': __fleet_labels} | to_json }}",
                "dest": str(out),
                "mode": "0644",
            },
        }],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook), encoding="utf-8")
    extra = dict({"ansible_python_interpreter": sys.executable}, **extra_vars)
    (tmp_path / "vars.json").write_text(json.dumps(extra), encoding="utf-8")
    full_env = {k: v for k, v in os.environ.items() if k not in ("MOLECULE_SCENARIO_NAME", "DASK_SWARM_TEST_RUN")}
    full_env.update(env, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "play.yml")],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


MOLECULE_VARS = {"molecule_yml": {"platforms": PLATFORMS}, "molecule_ephemeral_directory": "/nonexistent"}


def test_a_hand_run_keeps_todays_names(tmp_path):
    fleet = render_fleet(tmp_path, {"MOLECULE_SCENARIO_NAME": "default"}, **MOLECULE_VARS)
    assert fleet["name"] == fleet["network"] == "dask-swarm-default"
    assert [(n["container"], n["volume"]) for n in fleet["nodes"]] == [
        ("dask-swarm-default-manager1", "dask-swarm-default-manager1-docker"),
        ("dask-swarm-default-worker1", "dask-swarm-default-worker1-docker"),
    ]
    assert fleet["labels"] == {"dask_swarm.gateway.fleet": "dask-swarm-default", "dask_swarm.gateway.molecule": "default"}


def test_a_test_run_puts_its_id_in_every_name_and_label(tmp_path):
    env = {"MOLECULE_SCENARIO_NAME": "ha", "DASK_SWARM_TEST_RUN": "rt1a2b3-4c5"}
    fleet = render_fleet(tmp_path, env, **MOLECULE_VARS)
    assert fleet["name"] == fleet["network"] == "dask-swarm-ha-rt1a2b3-4c5"
    assert [(n["container"], n["volume"]) for n in fleet["nodes"]] == [
        ("dask-swarm-ha-rt1a2b3-4c5-manager1", "dask-swarm-ha-rt1a2b3-4c5-manager1-docker"),
        ("dask-swarm-ha-rt1a2b3-4c5-worker1", "dask-swarm-ha-rt1a2b3-4c5-worker1-docker"),
    ]
    # The node names (Molecule's instances, the inventory) stay the scenario's.
    assert [n["name"] for n in fleet["nodes"]] == ["manager1", "worker1"]
    assert fleet["labels"] == {
        "dask_swarm.gateway.fleet": "dask-swarm-ha-rt1a2b3-4c5",
        "dask_swarm.gateway.molecule": "ha",
        "dask_swarm.gateway.test-run": "rt1a2b3-4c5",
    }


def test_a_fleet_outside_molecule_ignores_the_run_id(tmp_path):
    # The sandbox (the quick start stage) has one fixed name by design.
    fleet = render_fleet(
        tmp_path, {"DASK_SWARM_TEST_RUN": "rt1a2b3-4c5"},
        fleet_name="dask-swarm-sandbox", fleet_nodes=[{"name": "manager1"}],
    )
    assert fleet["name"] == "dask-swarm-sandbox"
    assert fleet["nodes"][0]["container"] == "dask-swarm-sandbox-manager1"
    assert fleet["labels"] == {"dask_swarm.gateway.fleet": "dask-swarm-sandbox"}


def scenario_config(scenario, env):
    """molecule.yml after Molecule's interpolation (molecule.config.Config._interpolate)."""
    text = (ROOT / "extensions" / "molecule" / scenario / "molecule.yml").read_text(encoding="utf-8")
    return yaml.safe_load(Interpolator(TemplateWithDefaults, env).interpolate(text, MOLECULE_KEEP_STRING))


@pytest.mark.parametrize("scenario, variable, default", [
    ("default", "DASK_SWARM_TEST_PORT_DEFAULT", 18000),
    ("ha", "DASK_SWARM_TEST_PORT_HA", 18001),
])
@pytest.mark.parametrize("port", [None, 43117])
def test_the_gateway_port_follows_the_run(scenario, variable, default, port):
    env = {variable: str(port)} if port else {}
    config = scenario_config(scenario, env)
    published = [p for platform in config["platforms"] for p in platform.get("published_ports", [])]
    expected = port or default
    assert published == [f"127.0.0.1:{expected}:8000"]
    url = urlsplit(config["provisioner"]["inventory"]["group_vars"]["all"]["gateway_public_url"])
    assert (url.hostname, url.port) == ("127.0.0.1", expected)
