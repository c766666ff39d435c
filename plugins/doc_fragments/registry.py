# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """The connection options of the modules that talk to a registry (module_utils/registry_client.py)."""

    DOCUMENTATION = r"""
options:
  registry:
    description:
      - The registry, as C(host:port), for example V(192.0.2.10:5000). It is reached over HTTPS.
    type: str
    required: true
  ca_path:
    description:
      - A file of CA certificates that signed the registry's certificate, for example the
        collection's own CA. When not given, the system's CA certificates are trusted.
    type: path
  username:
    description:
      - The user of the registry's basic auth (htpasswd). Pushes need it; a registry whose pulls
        are anonymous needs none to read.
      - Requires O(password).
    type: str
  password:
    description:
      - The password of O(username).
    type: str
  timeout:
    description: Seconds to wait for each answer of the registry.
    type: int
    default: 30
notes:
  - The options O(registry), O(ca_path), O(username), O(password) and O(timeout) can be set for
    all of these modules at once with C(module_defaults) and the action group
    C(group/dask_swarm.gateway.registry).
"""
