"""The Docker connection options of this collection's modules."""

from ansible_collections.dask_swarm.gateway.plugins.module_utils.docker_client import (
    DEFAULT_DOCKER_HOST,
    docker_argument_spec,
    tls_config,
)


def params(**kwargs):
    base = dict(docker_host=DEFAULT_DOCKER_HOST, tls=False, validate_certs=False, ca_path=None, client_cert=None,
                client_key=None, timeout=60)
    base.update(kwargs)
    return base


def test_option_names_and_environment_follow_community_docker():
    spec = docker_argument_spec()
    assert spec["docker_host"]["fallback"][1] == ["DOCKER_HOST"]
    assert spec["validate_certs"]["fallback"][1] == ["DOCKER_TLS_VERIFY"]
    assert "tls_verify" in spec["validate_certs"]["aliases"]
    assert "ca_cert" in spec["ca_path"]["aliases"]


def test_plain_connection_has_no_tls():
    assert tls_config(params()) is None


def test_tls_without_verification():
    config = tls_config(params(tls=True))
    assert config.verify is False and config.cert is None


def test_verified_tls_with_client_certificate(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    config = tls_config(params(validate_certs=True, ca_path=str(ca), client_cert=str(cert), client_key=str(key)))
    assert config.verify is True
    assert config.ca_cert == str(ca)
    assert config.cert == (str(cert), str(key))
