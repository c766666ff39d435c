"""Fixtures shared by the integration tests: a real local dask-gateway-server."""

import pytest
from gateway_server import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, srv = start_server(tmp_path_factory.mktemp("gateway"))
    try:
        yield srv
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """The same server behind HTTPS with a self-signed certificate."""
    proc, srv = start_server(tmp_path_factory.mktemp("gateway-tls"), tls=True)
    try:
        yield srv
    finally:
        stop_server(proc)
