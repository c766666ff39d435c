#!/usr/bin/python
# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: registry_manifest_list
short_description: Publish a multi-platform manifest list in a Docker Distribution registry
version_added: 0.1.0
author: dask_swarm.gateway contributors (@dask_swarm)
description:
  - Makes one tag of a registry a Docker manifest list
    (C(application/vnd.docker.distribution.manifest.list.v2+json)) of images pushed per
    platform, for example C(REPO:TAG-x86_64) and C(REPO:TAG-aarch64) into C(REPO:TAG). Nodes
    then pull C(REGISTRY/REPO@sha256:...) (RV(ref)) and each gets the image of its platform.
  - Reads the manifest of every tag of O(sources) (a Docker schema 2 or an OCI image manifest)
    and its image config, whose C(os), C(architecture) and C(variant) become the entry's
    platform. A source that is itself a manifest list or an OCI index is refused, and so are
    two sources with the same platform; both errors name the sources.
  - The entries are sorted by (os, architecture, variant) and the list is written with a fixed
    JSON layout, so the same sources always give the same list and the same digest, whatever
    their order in O(sources).
  - When O(tag) already is that very list (same digest), nothing changes. Otherwise the list is
    uploaded (HTTP PUT) as O(tag).
  - Talks to the registry's HTTP API (v2) over HTTPS with the Python standard library only.
    Credentials are sent with HTTP basic auth, which Distribution's C(htpasswd) auth uses; token
    (Bearer) authentication is not supported.
  - The password is never part of the output, of error messages or of returned values.
options:
  repository:
    description:
      - The repository of the list and of its sources, for example V(dask-swarm/dask), without
        the registry.
    type: str
    required: true
  tag:
    description:
      - The tag the manifest list is published as, for example V(2024.1.0).
    type: str
    required: true
  sources:
    description:
      - Tags in O(repository), one image per platform, for example
        V([2024.1.0-x86_64, 2024.1.0-aarch64]).
      - Their order does not matter.
    type: list
    elements: str
    required: true
extends_documentation_fragment:
  - dask_swarm.gateway.registry
attributes:
  check_mode:
    description: Can run in check mode and return the changed status without changing anything.
    support: full
    details: In check mode the module reads the sources and the tag and reports the digest the list
      would have, but uploads nothing.
  diff_mode:
    description: Can return a diff of what would change.
    support: none
requirements:
  - None besides Python's standard library.
notes:
  - Distribution checks that every image of a list is in the repository, so the sources must be
    pushed first.
  - An entry's C(mediaType) is its source's, so an OCI image manifest is listed as one.
seealso:
  - module: dask_swarm.gateway.registry_image_info
  - name: Docker Registry HTTP API V2
    description: The API the module speaks.
    link: https://distribution.github.io/distribution/spec/api/
  - name: Image Manifest V2, Schema 2
    description: The manifest list format.
    link: https://distribution.github.io/distribution/spec/manifest-v2-2/
"""

EXAMPLES = r"""
- name: Publish the multi-platform tag of the images pushed per architecture
  dask_swarm.gateway.registry_manifest_list:
    registry: "{{ groups['swarm_managers'][0] }}:5000"
    ca_path: "{{ playbook_dir }}/files/ca.crt"
    username: pusher
    password: "{{ registry_push_password }}"
    repository: dask-swarm/dask
    tag: "2024.1.0"
    sources:
      - 2024.1.0-x86_64
      - 2024.1.0-aarch64
  delegate_to: localhost
  run_once: true
  register: image_list

- name: Pull the list by digest on every node
  community.docker.docker_image_pull:
    name: "{{ image_list.ref }}"

- name: Only compute the digest the list would have
  dask_swarm.gateway.registry_manifest_list:
    registry: registry.lab.example:5000
    repository: dask-swarm/dask
    tag: "2024.1.0"
    sources: [2024.1.0-x86_64, 2024.1.0-aarch64]
  check_mode: true
  register: image_list
"""

RETURN = r"""
digest:
  description:
    - The manifest list's digest, also in check mode (the digest it would have).
  returned: success
  type: str
  sample: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
ref:
  description: The reference nodes pull, C(REGISTRY/REPOSITORY@DIGEST).
  returned: success
  type: str
  sample: 192.0.2.10:5000/dask-swarm/dask@sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
previous_digest:
  description: The digest O(tag) had before the module ran; null when the tag did not exist.
  returned: success
  type: str
media_type:
  description: The list's media type.
  returned: success
  type: str
  sample: application/vnd.docker.distribution.manifest.list.v2+json
platforms:
  description: The list's entries, in its order (sorted by os, architecture and variant).
  returned: success
  type: list
  elements: dict
  contains:
    os:
      description: The image's operating system, from its config.
      type: str
      sample: linux
    architecture:
      description: The image's CPU architecture, from its config (Go's names, V(amd64), V(arm64)).
      type: str
      sample: arm64
    variant:
      description: The CPU variant, for example V(v8); empty when the config names none.
      type: str
      sample: v8
    digest:
      description: The digest of the source's manifest.
      type: str
    source:
      description: The tag of O(sources) the entry comes from.
      type: str
      sample: 2024.1.0-aarch64
  sample:
    - {"os": "linux", "architecture": "amd64", "variant": "", "digest": "sha256:0f3a...", "source": "2024.1.0-x86_64"}
    - {"os": "linux", "architecture": "arm64", "variant": "v8", "digest": "sha256:9c1e...", "source": "2024.1.0-aarch64"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dask_swarm.gateway.plugins.module_utils.registry_client import (
    DOCKER_MANIFEST_LIST,
    IMAGE_MANIFEST_TYPES,
    LIST_TYPES,
    REQUIRED_TOGETHER,
    RegistryClient,
    RegistryError,
    argument_spec as registry_argument_spec,
    build_manifest_list,
    check_reference,
    check_repository,
    platform_from_config,
)


def argument_spec():
    spec = dict(
        repository=dict(type="str", required=True),
        tag=dict(type="str", required=True),
        sources=dict(type="list", elements="str", required=True),
    )
    spec.update(registry_argument_spec())
    return spec


def check_sources(sources):
    """Non-empty, valid tags, each named once."""
    if not sources:
        raise RegistryError("sources is empty: name at least one tag, one image per platform")
    seen = set()
    for source in sources:
        check_reference(source)
        if source in seen:
            raise RegistryError("source %s is listed twice" % source)
        seen.add(source)


def read_source(client, repository, source):
    """The list entry of one source tag: its manifest's type, size and digest, and its platform."""
    what = "%s:%s" % (repository, source)
    try:
        manifest = client.get_manifest(repository, source)
    except RegistryError as exc:
        if exc.not_found:
            raise RegistryError("source %s not found in the registry %s" % (what, client.registry), status=404)
        raise
    if manifest.media_type in LIST_TYPES:
        raise RegistryError(
            "source %s is itself a manifest list or index (%s), not the image of one platform" % (what, manifest.media_type)
        )
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        raise RegistryError(
            "source %s has media type %s; a source must be a Docker schema 2 or an OCI image manifest"
            % (what, manifest.media_type or "(none)")
        )
    return {
        "source": source,
        "media_type": manifest.media_type,
        "size": manifest.size,
        "digest": manifest.digest,
        "platform": platform_from_config(client.get_config(repository, manifest, what)),
    }


def publish(client, repository, tag, sources, check_mode):
    """Build the list of ``sources`` and put it as ``tag`` unless it is there; returns the result."""
    check_repository(repository)
    check_reference(tag)
    if tag.startswith("sha256:"):
        raise RegistryError("tag must be a tag, not a digest: %s" % tag)
    check_sources(sources)
    entries = [read_source(client, repository, source) for source in sources]
    body, digest, ordered = build_manifest_list(entries)

    current = client.head_manifest(repository, tag)
    previous_digest = current[1] if current else None
    changed = previous_digest != digest
    if changed and not check_mode:
        stored = client.put_manifest(repository, tag, body, DOCKER_MANIFEST_LIST)
        if stored != digest:
            raise RegistryError(
                "the registry %s stored %s:%s with digest %s, not %s" % (client.registry, repository, tag, stored, digest)
            )
    return dict(
        changed=changed,
        digest=digest,
        ref="%s/%s@%s" % (client.registry, repository, digest),
        previous_digest=previous_digest,
        media_type=DOCKER_MANIFEST_LIST,
        platforms=[
            dict(
                os=entry["platform"]["os"],
                architecture=entry["platform"]["architecture"],
                variant=entry["platform"]["variant"],
                digest=entry["digest"],
                source=entry["source"],
            )
            for entry in ordered
        ],
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_together=REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    try:
        client = RegistryClient.from_params(params)
        result = publish(client, params["repository"], params["tag"], params["sources"], module.check_mode)
    except RegistryError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
