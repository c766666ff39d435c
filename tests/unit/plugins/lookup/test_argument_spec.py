import yaml
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.dask_swarm.gateway.plugins.lookup.argument_spec import (
    read_argument_spec,
)

ROOT = Path(__file__).resolve().parents[4]


def test_reads_the_main_entry_point_of_a_role():
    options = read_argument_spec("docker_engine")
    assert options["docker_engine_source"]["choices"] == ["distro", "docker_ce"]
    assert options["docker_engine_log_max_file"]["type"] == "int"


def test_reads_another_entry_point():
    assert read_argument_spec("swarm_manager", "inventory") == {}


def test_unknown_role_names_the_known_ones():
    with pytest.raises(AnsibleLookupError, match=r"no role 'gateway_x'.*docker_engine.*swarm_labels"):
        read_argument_spec("gateway_x")


def test_unknown_entry_point_names_the_existing_ones():
    with pytest.raises(AnsibleLookupError, match=r"no entry point 'nope'.*inventory, main"):
        read_argument_spec("swarm_manager", "nope")


def test_lookup_through_ansible_returns_the_spec_of_each_role():
    """Through Ansible's own plugin loader, as the preflight play calls it."""
    expr = "{{ query('dask_swarm.gateway.argument_spec', 'swarm_worker', 'swarm_labels') | map('list') }}"
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible"), "localhost", "-m", "ansible.builtin.debug", "-a", f"msg={expr}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    # The ad-hoc callback prints "localhost | SUCCESS => " and the result.
    worker, labels = yaml.safe_load(out.split("=>", 1)[1])["msg"]
    assert "swarm_worker_advertise_addr" in worker
    assert "swarm_labels_state" in labels


def test_broken_spec_file_is_reported(tmp_path):
    (tmp_path / "broken" / "meta").mkdir(parents=True)
    (tmp_path / "broken" / "meta" / "argument_specs.yml").write_text("argument_specs: [unclosed\n")
    with pytest.raises(AnsibleLookupError, match="cannot parse"):
        read_argument_spec("broken", roles_dir=tmp_path)
