"""The registry client's pure functions: names, digests, platforms, and the manifest list's bytes.

The client against real registries is tested in
tests/integration/modules/test_registry_modules.py.
"""

import hashlib
import json

import pytest

from ansible_collections.dask_swarm.gateway.plugins.module_utils.registry_client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    argument_spec,
    build_manifest_list,
    check_reference,
    check_registry,
    check_repository,
    digest_of,
    error_details,
    manifest_media_type,
    platform_from_config,
    platform_name,
    redact,
    secret_variants,
    serialize,
    verify_digest,
)

X86 = {
    "source": "t-x86_64",
    "media_type": DOCKER_MANIFEST,
    "size": 528,
    "digest": "sha256:" + "a" * 64,
    "platform": {"os": "linux", "architecture": "amd64", "variant": ""},
}
ARM = {
    "source": "t-aarch64",
    "media_type": DOCKER_MANIFEST,
    "size": 529,
    "digest": "sha256:" + "b" * 64,
    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
}
ARM_V7 = {
    "source": "t-armv7",
    "media_type": OCI_MANIFEST,
    "size": 530,
    "digest": "sha256:" + "c" * 64,
    "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
}


def test_argument_spec():
    spec = argument_spec()
    assert spec["registry"] == {"type": "str", "required": True}
    assert spec["password"]["no_log"] is True
    assert spec["ca_path"]["type"] == "path"
    assert spec["timeout"] == {"type": "int", "default": 30}
    assert spec["username"] == {"type": "str"}


def test_the_list_is_sorted_by_platform_whatever_the_order_of_the_sources():
    body, digest, ordered = build_manifest_list([ARM, X86, ARM_V7])
    assert [e["source"] for e in ordered] == ["t-x86_64", "t-armv7", "t-aarch64"]  # amd64 < arm < arm64
    for order in ([X86, ARM, ARM_V7], [ARM_V7, ARM, X86], [X86, ARM_V7, ARM]):
        assert build_manifest_list(order)[:2] == (body, digest)


def test_the_list_document():
    body, digest, _ = build_manifest_list([ARM, X86])
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert json.loads(body) == {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": 528, "digest": X86["digest"],
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "size": 529, "digest": ARM["digest"],
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }


def test_the_serialization_is_fixed_byte_for_byte():
    # These exact bytes (hence this digest) are what a rerun compares with:
    # changing the layout re-publishes every list once. Change it on purpose only.
    body, digest, _ = build_manifest_list([X86])
    assert body.decode() == (
        '{\n'
        '   "manifests": [\n'
        '      {\n'
        '         "digest": "sha256:%s",\n'
        '         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
        '         "platform": {\n'
        '            "architecture": "amd64",\n'
        '            "os": "linux"\n'
        '         },\n'
        '         "size": 528\n'
        '      }\n'
        '   ],\n'
        '   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",\n'
        '   "schemaVersion": 2\n'
        '}' % ("a" * 64)
    )
    assert digest == digest_of(body)
    # Key order of the input does not matter either.
    assert serialize({"b": 1, "a": [2]}) == serialize({"a": [2], "b": 1})


def test_two_sources_of_one_platform_are_an_error_naming_both():
    copy = dict(X86, source="t-x86_64-copy", digest="sha256:" + "d" * 64)
    with pytest.raises(RegistryError) as exc:
        build_manifest_list([X86, ARM, copy])
    assert str(exc.value) == (
        "sources t-x86_64 and t-x86_64-copy have the same platform linux/amd64; a manifest list holds one image per platform"
    )


def test_a_variant_makes_another_platform():
    arm_plain = dict(ARM, source="t-arm64", digest="sha256:" + "e" * 64, platform={"os": "linux", "architecture": "arm64"})
    _, _, ordered = build_manifest_list([ARM, arm_plain])
    assert [e["source"] for e in ordered] == ["t-arm64", "t-aarch64"]


def test_a_source_without_os_or_architecture_is_an_error():
    with pytest.raises(RegistryError, match="source t-x: its image config names no os and architecture"):
        build_manifest_list([dict(X86, source="t-x", platform={"os": "linux", "architecture": ""})])
    with pytest.raises(RegistryError, match="at least one source"):
        build_manifest_list([])


def test_platform_from_config():
    assert platform_from_config({"os": "linux", "architecture": "arm64", "variant": "v8", "config": {}}) == {
        "os": "linux", "architecture": "arm64", "variant": "v8"
    }
    assert platform_from_config({"os": "linux", "architecture": "amd64"})["variant"] == ""
    assert platform_name({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"
    assert platform_name({"os": "linux", "architecture": "amd64", "variant": ""}) == "linux/amd64"


def test_media_type_from_the_document_or_the_header():
    assert manifest_media_type({"mediaType": DOCKER_MANIFEST_LIST}, "application/json") == DOCKER_MANIFEST_LIST
    assert manifest_media_type({"schemaVersion": 2}, OCI_MANIFEST + "; charset=utf-8") == OCI_MANIFEST
    # An OCI document may leave mediaType out; an index has "manifests".
    assert manifest_media_type({"schemaVersion": 2, "manifests": []}, "application/json") == OCI_INDEX
    assert manifest_media_type({"schemaVersion": 2, "config": {}}, "") == OCI_MANIFEST


def test_a_digest_that_does_not_match_the_content_is_an_error():
    body = b'{"schemaVersion": 2}'
    assert verify_digest(body, None, "r:t") == digest_of(body)
    assert verify_digest(body, digest_of(body), "r:t") == digest_of(body)
    with pytest.raises(RegistryError, match="r:t: the registry announced digest sha256:0+ but the content has digest"):
        verify_digest(body, "sha256:" + "0" * 64, "r:t")


@pytest.mark.parametrize("registry", ["127.0.0.1:5000", "registry.lab.example", "reg-1.lab:443", "[::1]:5000"])
def test_valid_registries(registry):
    assert check_registry(registry) == registry


@pytest.mark.parametrize("registry", ["https://127.0.0.1:5000", "127.0.0.1:5000/v2", "", "a b:1", None])
def test_invalid_registries(registry):
    with pytest.raises(RegistryError, match="registry must be host:port"):
        check_registry(registry)


def test_names_and_references():
    assert check_repository("dask-swarm/dask") == "dask-swarm/dask"
    assert check_reference("2024.1.0-aarch64") == "2024.1.0-aarch64"
    assert check_reference("sha256:" + "f" * 64)
    for bad in ("Dask/Upper", "/leading", "a//b", "a/../b"):
        with pytest.raises(RegistryError, match="invalid repository name"):
            check_repository(bad)
    for bad in ("-t", ".t", "a/b", "t" * 129, "tag?x=1", "t\u00e9"):
        with pytest.raises(RegistryError, match="invalid tag"):
            check_reference(bad)


def test_error_details_of_a_distribution_answer():
    body = json.dumps(
        {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "t"}}]}
    ).encode()
    assert error_details(body) == (["MANIFEST_UNKNOWN"], 'MANIFEST_UNKNOWN manifest unknown ({"Tag": "t"})')
    assert error_details(b"not json") == ([], "")


def test_the_password_is_masked_in_any_form():
    secrets = secret_variants("pusher", "p@ss word")
    text = "p@ss word / p%40ss%20word / cHVzaGVyOnBAc3Mgd29yZA=="
    assert redact(text, secrets) == "******** / ******** / ********"
    assert secret_variants("pusher", None) == []


def test_a_ca_file_that_cannot_be_read_names_ca_path(tmp_path):
    with pytest.raises(RegistryError, match="cannot load the CA certificates of ca_path %s" % tmp_path):
        RegistryClient("127.0.0.1:5000", ca_path=str(tmp_path / "missing.crt"))
