"""Fixtures for integration tests against the real Docker engine.

The image is built if absent, the engine made a single-node swarm if it is in
none (and left again at the end only then), this node given the Dask-worker
label (restored at the end). Nothing is skipped: without Docker these tests
fail.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness  # noqa: E402
from clienthelpers import reporter  # noqa: E402

# Settings of the gateway under test: limits small enough to hit.
GATEWAY_SETTINGS = dict(cluster_max_workers=3, max_total_workers=4)


@pytest.fixture(scope="session")
def docker_client():
    client = harness.docker_client()
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def swarm(docker_client):
    initialised = harness.ensure_swarm(docker_client)
    previous = harness.ensure_node_label(docker_client, harness.WORKER_NODE_LABEL)
    yield docker_client
    if initialised:
        harness.leave_swarm(docker_client)
    else:
        harness.restore_node_label(docker_client, harness.WORKER_NODE_LABEL, previous)


@pytest.fixture(scope="session")
def image(docker_client):
    return harness.build_image()


@pytest.fixture(scope="module")
def gateway(swarm, image, request):
    failed_before = request.session.testsfailed
    # A test module may run its own gateway, with the settings it tests.
    settings = getattr(request.module, "GATEWAY_SETTINGS", GATEWAY_SETTINGS)
    deployment = harness.GatewayDeployment(swarm, image, **settings)
    try:
        deployment.deploy()
        yield deployment
    finally:
        if request.session.testsfailed > failed_before:
            # The gateway's log (no secret is ever logged) for diagnosis.
            print(deployment.logs())
        deployment.remove()


@pytest.fixture
def report(capsys):
    return reporter(capsys)
