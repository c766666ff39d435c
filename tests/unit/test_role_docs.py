"""Role READMEs are generated from meta/argument_specs.yml and must be current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_role_readmes_are_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_variable_of_a_role_is_in_its_readme():
    import yaml

    for spec_file in ROOT.glob("roles/*/meta/argument_specs.yml"):
        readme = (spec_file.parents[1] / "README.md").read_text()
        options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"].get("options") or {}
        missing = [name for name in options if f"`{name}`" not in readme]
        assert not missing, f"{spec_file.parents[1].name}: README lacks {missing}"
