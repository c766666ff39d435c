"""The conventions every role keeps: argument_specs.yml is the single source of
truth for its variables, public variables carry the role's prefix, private
ones `__<role>_`."""

from pathlib import Path

import pytest
import yaml
from ansible.playbook.block import Block
from ansible.playbook.handler import Handler
from ansible.playbook.task import Task

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


# Every keyword a task, handler or block may carry; any other key of a task
# is its action. `action`/`local_action` name the module in their value.
TASK_KEYWORDS = set(Task.fattributes) | set(Handler.fattributes) | set(Block.fattributes)
ACTION_KEYWORDS = {"action", "local_action"}


def non_fqcn_actions(tasks, where):
    """The actions of ``tasks`` that are not namespace.collection.module, also
    inside block/rescue/always, at any depth."""
    offenders = []
    for task in tasks or []:
        for section in ("block", "rescue", "always"):
            offenders += non_fqcn_actions(task.get(section), where)
        for key, value in task.items():
            if key in ACTION_KEYWORDS:
                module = value.get("module", "") if isinstance(value, dict) else str(value).split(" ", 1)[0]
            elif key in TASK_KEYWORDS or key.startswith("with_"):
                continue
            else:
                module = key
            if module.count(".") < 2:
                offenders.append(f"{where}: {task.get('name', '(unnamed)')}: {module}")
    return offenders


def test_the_fqcn_check_looks_into_nested_blocks():
    tasks = [
        {"name": "fine", "ansible.builtin.debug": {"msg": "x"}, "when": "true", "loop": [1]},
        {
            "name": "outer",
            "block": [
                {
                    "name": "inner",
                    "block": [{"name": "nested", "command": "true"}],
                    "rescue": [{"name": "in rescue", "ansible.builtin.shell": "true"}],
                    "always": [{"name": "in always", "debug": {"msg": "x"}}],
                }
            ],
        },
        {"name": "action form", "action": "copy src=a dest=b"},
        {"name": "local action form", "local_action": {"module": "ansible.builtin.stat", "path": "/"}},
        {"name": "with loop", "with_items": [1], "ansible.builtin.debug": {"var": "item"}},
    ]
    assert non_fqcn_actions(tasks, "t.yml") == [
        "t.yml: nested: command",
        "t.yml: in always: debug",
        "t.yml: action form: copy",
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_tasks_use_only_fully_qualified_modules(role):
    offenders = []
    for directory in ("tasks", "handlers"):
        for tasks_file in sorted((ROLES / role / directory).rglob("*.yml")):
            offenders += non_fqcn_actions(load(tasks_file), str(tasks_file.relative_to(ROLES / role)))
    assert not offenders, f"{role}: non-FQCN actions: {offenders}"
