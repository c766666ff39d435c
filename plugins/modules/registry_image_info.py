#!/usr/bin/python
# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: registry_image_info
short_description: Read tags, digests and platforms from a Docker Distribution registry
version_added: 0.1.0
author: dask_swarm.gateway contributors (@dask_swarm)
description:
  - For each tag of O(tags) in O(repository), reads its manifest and reports its digest, its
    media type and its platforms. For a manifest list or an OCI index those are its entries'
    platforms; for a single image (Docker schema 2 or OCI image manifest) the platform its
    image config names.
  - A tag the registry does not have, or a repository it does not have, is reported as null;
    it is not an error. Any other failure (an unreachable registry, a certificate not trusted,
    credentials refused) fails the module with a message that says which.
  - Talks to the registry's HTTP API (v2) over HTTPS with the Python standard library only.
    Credentials are sent with HTTP basic auth, which Distribution's C(htpasswd) auth uses; a
    registry that allows anonymous pulls needs none.
  - Changes nothing.
  - The password is never part of the output, of error messages or of returned values.
options:
  repository:
    description:
      - The repository, for example V(dask-swarm/dask), without the registry.
    type: str
    required: true
  tags:
    description:
      - The tags to read. A C(sha256:) digest may be given instead of a tag.
    type: list
    elements: str
    required: true
extends_documentation_fragment:
  - dask_swarm.gateway.registry
attributes:
  check_mode:
    description: Can run in check mode and return the changed status without changing anything.
    support: full
    details: The module changes nothing, so it runs the same in check mode.
  diff_mode:
    description: Can return a diff of what would change.
    support: none
requirements:
  - None besides Python's standard library.
seealso:
  - module: dask_swarm.gateway.registry_manifest_list
  - name: Docker Registry HTTP API V2
    description: The API the module speaks.
    link: https://distribution.github.io/distribution/spec/api/
"""

EXAMPLES = r"""
- name: Read the multi-platform tag and its per-architecture images
  dask_swarm.gateway.registry_image_info:
    registry: "{{ groups['swarm_managers'][0] }}:5000"
    ca_path: "{{ playbook_dir }}/files/ca.crt"
    repository: dask-swarm/dask
    tags: ["2024.1.0", 2024.1.0-x86_64, 2024.1.0-aarch64]
  delegate_to: localhost
  run_once: true
  register: registry_images

- name: Push the image when the registry does not have it
  ansible.builtin.include_tasks: push.yml
  when: registry_images.images['2024.1.0-x86_64'] is none

- name: Every platform the fleet runs must be in the list
  ansible.builtin.assert:
    that:
      - >-
        registry_images.images['2024.1.0'].platforms | map(attribute='architecture') | list
        is superset(['amd64', 'arm64'])
"""

RETURN = r"""
images:
  description:
    - One key per tag of O(tags). Its value is null when the registry has no such tag or no such
      repository, else a dict with the keys below.
  returned: success
  type: dict
  contains:
    digest:
      description: The manifest's digest (checked against its content).
      type: str
      sample: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
    media_type:
      description: The manifest's media type.
      type: str
      sample: application/vnd.docker.distribution.manifest.list.v2+json
    platforms:
      description:
        - For a list or an index, one per entry, in its order; for a single image, the one its
          config names.
      type: list
      elements: dict
      contains:
        os:
          description: Operating system.
          type: str
          sample: linux
        architecture:
          description: CPU architecture (Go's names, V(amd64), V(arm64)).
          type: str
          sample: arm64
        variant:
          description: CPU variant, for example V(v8); empty when none is named.
          type: str
        digest:
          description: The digest of the image's manifest (for a single image, RV(images.digest)).
          type: str
        media_type:
          description: The media type of the image's manifest.
          type: str
  sample:
    "2024.1.0":
      digest: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
      media_type: application/vnd.docker.distribution.manifest.list.v2+json
      platforms:
        - {"os": "linux", "architecture": "amd64", "variant": "", "digest": "sha256:0f3a...",
           "media_type": "application/vnd.docker.distribution.manifest.v2+json"}
        - {"os": "linux", "architecture": "arm64", "variant": "v8", "digest": "sha256:9c1e...",
           "media_type": "application/vnd.docker.distribution.manifest.v2+json"}
    "2024.1.0-riscv64": null
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dask_swarm.gateway.plugins.module_utils.registry_client import (
    REQUIRED_TOGETHER,
    RegistryClient,
    RegistryError,
    argument_spec as registry_argument_spec,
    check_reference,
    check_repository,
)


def argument_spec():
    spec = dict(
        repository=dict(type="str", required=True),
        tags=dict(type="list", elements="str", required=True),
    )
    spec.update(registry_argument_spec())
    return spec


def image_info(client, repository, reference):
    """The digest, media type and platforms of ``repository:reference``; None when missing."""
    try:
        manifest = client.get_manifest(repository, reference)
    except RegistryError as exc:
        if exc.not_found:
            return None
        raise
    what = "%s%s%s" % (repository, "@" if reference.startswith("sha256:") else ":", reference)
    return dict(
        digest=manifest.digest,
        media_type=manifest.media_type,
        platforms=client.platforms(repository, manifest, what),
    )


def read_images(client, repository, tags):
    check_repository(repository)
    for tag in tags:
        check_reference(tag)
    return dict((tag, image_info(client, repository, tag)) for tag in tags)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_together=REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    try:
        client = RegistryClient.from_params(params)
        images = read_images(client, params["repository"], params["tags"])
    except RegistryError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=False, images=images)


if __name__ == "__main__":
    main()
