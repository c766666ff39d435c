# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lookup plugin: the argument spec of one of this collection's roles."""

from __future__ import annotations

DOCUMENTATION = r"""
name: argument_spec
author: dask_swarm.gateway contributors (@dask_swarm)
version_added: 0.1.0
short_description: Read the argument spec of one of this collection's roles
description:
  - Returns the O(entry_point) options of a role of C(dask_swarm.gateway), read from the
    role's C(meta/argument_specs.yml).
  - A preflight play feeds it to M(ansible.builtin.validate_argument_spec) so that every
    role's variables are checked on every host before any role changes anything.
options:
  _terms:
    description: Names of roles of this collection.
    required: true
    type: list
    elements: str
  entry_point:
    description: The entry point whose options are returned.
    type: str
    default: main
"""

EXAMPLES = r"""
- name: Validate docker_engine's variables before any change
  ansible.builtin.validate_argument_spec:
    argument_spec: "{{ lookup('dask_swarm.gateway.argument_spec', 'docker_engine') }}"
"""

RETURN = r"""
_raw:
  description: One dict of options (name to spec) per role named.
  type: list
  elements: dict
"""

from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    yaml = None

display = Display()

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"


def read_argument_spec(role, entry_point="main", roles_dir=ROLES_DIR):
    """Return the options of ``entry_point`` in ``role``'s argument spec."""
    spec_file = Path(roles_dir) / role / "meta" / "argument_specs.yml"
    if not spec_file.is_file():
        known = sorted(p.name for p in Path(roles_dir).iterdir() if (p / "meta" / "argument_specs.yml").is_file())
        raise AnsibleLookupError(
            "dask_swarm.gateway has no role %r with an argument spec; known roles: %s" % (role, ", ".join(known))
        )
    try:
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AnsibleLookupError("cannot parse %s: %s" % (spec_file, to_native(exc)))
    entry_points = data.get("argument_specs") or {}
    if entry_point not in entry_points:
        raise AnsibleLookupError(
            "role %r has no entry point %r in %s (it has: %s)"
            % (role, entry_point, spec_file, ", ".join(sorted(entry_points)))
        )
    return entry_points[entry_point].get("options") or {}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        entry_point = self.get_option("entry_point")
        results = []
        for role in terms:
            display.vvvv("argument_spec: reading %s entry point %s" % (role, entry_point))
            results.append(read_argument_spec(role, entry_point))
        return results
