import re
import subprocess
import sys
from pathlib import Path

import yaml

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.dask_swarm.gateway.plugins.lookup.argument_spec import (
    read_argument_spec,
)

ROOT = Path(__file__).resolve().parents[4]
# The ansible of the environment that runs the tests (not a fixed .venv path).
BIN = Path(sys.executable).parent


def test_reads_the_main_entry_point_of_a_role():
    options = read_argument_spec("docker_engine")
    assert options["docker_engine_source"]["choices"] == ["distro", "docker_ce"]
    assert options["docker_engine_log_max_file"]["type"] == "int"


def test_reads_another_entry_point():
    assert read_argument_spec("swarm_manager", "inventory") == {}


def test_unknown_role_names_the_known_ones():
    with pytest.raises(AnsibleLookupError) as info:
        read_argument_spec("gateway_x")
    assert str(info.value) == (
        "dask_swarm.gateway has no role 'gateway_x' with an argument spec; known roles: "
        "dask_image, docker_engine, gateway, jupyterhub, registry, swarm_labels, swarm_manager, swarm_worker"
    )


def test_unknown_entry_point_names_the_existing_ones():
    with pytest.raises(AnsibleLookupError) as info:
        read_argument_spec("swarm_manager", "nope")
    spec = ROOT / "roles" / "swarm_manager" / "meta" / "argument_specs.yml"
    assert str(info.value) == f"role 'swarm_manager' has no entry point 'nope' in {spec} (it has: inventory, main)"


def test_lookup_through_ansible_returns_the_spec_of_each_role():
    """Through Ansible's own plugin loader, as the preflight play calls it."""
    expr = "{{ query('dask_swarm.gateway.argument_spec', 'swarm_worker', 'swarm_labels') | map('list') }}"
    out = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.debug", "-a", f"msg={expr}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    # The ad-hoc callback prints "localhost | SUCCESS => " and the result.
    worker, labels = yaml.safe_load(out.split("=>", 1)[1])["msg"]
    assert "swarm_worker_advertise_addr" in worker
    assert "swarm_labels_state" in labels


def test_broken_spec_file_is_reported(tmp_path):
    (tmp_path / "broken" / "meta").mkdir(parents=True)
    (tmp_path / "broken" / "meta" / "argument_specs.yml").write_text("argument_specs: [unclosed\n")
    spec = tmp_path / "broken" / "meta" / "argument_specs.yml"
    with pytest.raises(AnsibleLookupError) as info:
        read_argument_spec("broken", roles_dir=tmp_path)
    # The file, then YAML's own account of where it broke.
    assert re.fullmatch(
        re.escape(f"cannot parse {spec}: while parsing a flow sequence\n") + r".*expected ',' or '\]', but got '<stream end>'.*",
        str(info.value),
        flags=re.DOTALL,
    ), str(info.value)
