"""The conventions every role keeps: argument_specs.yml is the single source of
truth for its variables, public variables carry the role's prefix, private
ones `__<role>_`."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if p.is_dir())


def load(path):
    return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}


def main_options(role):
    return load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"].get("options") or {}


def test_there_are_roles():
    assert {"docker_engine", "swarm_manager", "swarm_worker", "swarm_labels"} <= set(ROLE_NAMES)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_default_is_documented_with_the_same_value(role):
    options = main_options(role)
    defaults = load(ROLES / role / "defaults" / "main.yml")
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"{role}: defaults not in argument_specs.yml: {undocumented}"
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value:
            # Ansible templates argument specs when it validates them, so a
            # templated default lives in defaults/main.yml only.
            assert "default" not in options[name], f"{role}.{name}: templated default repeated in the spec"
        else:
            assert options[name].get("default") == value, (
                f"{role}.{name}: spec default {options[name].get('default')!r} != defaults {value!r}"
            )


def test_no_spec_holds_a_template():
    for spec_file in ROLES.glob("*/meta/argument_specs.yml"):
        assert "{{" not in spec_file.read_text(), f"{spec_file}: templates break argument validation"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_option_is_prefixed_and_described(role):
    for name, spec in main_options(role).items():
        assert name.startswith(f"{role}_"), f"{role}: option {name} lacks the prefix {role}_"
        assert spec.get("description"), f"{role}: option {name} has no description"
        assert spec.get("type"), f"{role}: option {name} has no type"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_private_variables_are_prefixed(role):
    private = load(ROLES / role / "vars" / "main.yml")
    wrong = [name for name in private if not name.startswith(f"__{role}_")]
    assert not wrong, f"{role}: vars/main.yml names without the __{role}_ prefix: {wrong}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_tasks_use_only_fully_qualified_modules(role):
    offenders = []
    for tasks_file in (ROLES / role).glob("*/*.yml"):
        if tasks_file.parent.name not in ("tasks", "handlers"):
            continue
        for task in load(tasks_file) or []:
            for item in [task] + task.get("block", []) + task.get("rescue", []):
                keys = set(item) - {"name", "when", "register", "loop", "vars", "notify", "no_log",
                                    "delegate_to", "run_once", "throttle", "changed_when", "failed_when",
                                    "check_mode", "block", "rescue", "always", "become", "tags",
                                    "ignore_errors", "listen", "loop_control", "until", "retries", "delay"}
                offenders += [f"{tasks_file.name}: {k}" for k in keys if k.count(".") < 2]
    assert not offenders, f"{role}: non-FQCN actions: {offenders}"
