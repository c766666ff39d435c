# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small Docker SDK client for this collection's modules.

The connection options carry the names community.docker uses (docker_host,
tls, validate_certs, ca_path, client_cert, client_key, timeout) and read the
same environment variables, so a play can set them once for both.
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import env_fallback

DOCKER_IMPORT_ERROR = None
try:
    import docker
    # APIError is imported for the modules that use this helper.
    from docker.errors import APIError, DockerException  # pylint: disable=unused-import
    from docker.tls import TLSConfig
except ImportError:  # pragma: no cover - reported through missing_required_lib
    docker = TLSConfig = None
    APIError = DockerException = Exception
    DOCKER_IMPORT_ERROR = traceback.format_exc()

HAS_DOCKER = DOCKER_IMPORT_ERROR is None

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_argument_spec():
    """Connection options, to merge into a module's argument spec."""
    return dict(
        docker_host=dict(
            type="str",
            default=DEFAULT_DOCKER_HOST,
            aliases=["docker_url"],
            fallback=(env_fallback, ["DOCKER_HOST"]),
        ),
        tls=dict(type="bool", default=False, fallback=(env_fallback, ["DOCKER_TLS"])),
        validate_certs=dict(
            type="bool",
            default=False,
            aliases=["tls_verify"],
            fallback=(env_fallback, ["DOCKER_TLS_VERIFY"]),
        ),
        ca_path=dict(type="path", aliases=["ca_cert", "tls_ca_cert", "cacert_path"]),
        client_cert=dict(type="path", aliases=["tls_client_cert", "cert_path"]),
        client_key=dict(type="path", aliases=["tls_client_key", "key_path"], no_log=False),
        timeout=dict(type="int", default=60, fallback=(env_fallback, ["DOCKER_TIMEOUT"])),
    )


def tls_config(params):
    """The ``TLSConfig`` the options ask for, or ``None`` for a plain connection."""
    if not (params.get("tls") or params.get("validate_certs")):
        return None
    client_cert = None
    if params.get("client_cert") and params.get("client_key"):
        client_cert = (params["client_cert"], params["client_key"])
    return TLSConfig(
        client_cert=client_cert,
        ca_cert=params.get("ca_path"),
        verify=bool(params.get("validate_certs")),
    )


def get_docker_client(module):
    """Connect to the daemon the module's options name; fail the module if impossible."""
    params = module.params
    try:
        client = docker.APIClient(
            base_url=params["docker_host"],
            tls=tls_config(params) or False,
            timeout=params["timeout"],
            version="auto",
        )
    except DockerException as exc:
        module.fail_json(
            msg="cannot connect to the Docker daemon at %s: %s" % (params["docker_host"], exc),
            exception=traceback.format_exc(),
        )
    return client
