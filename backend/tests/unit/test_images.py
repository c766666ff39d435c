"""Which images a cluster may ask for, decided before Docker is asked.

No Docker: these cases never reach it (the backend has no client, so a
Docker call would fail the test). Images Docker must look up are tested on
a real swarm (tests/integration/test_failures.py).
"""

import asyncio

import pytest
from dask_gateway_server.backends.base import PublicException

from traitlets import TraitError

from dask_gateway_swarm import SwarmBackend
from dask_gateway_swarm.backend import image_is_under

FLEET_IMAGE = "10.0.0.2:5000/dask-gateway-swarm@sha256:" + "a" * 64


def check(b, image):
    return asyncio.run(b.check_image(image))


@pytest.fixture
def fleet_backend():
    from traitlets.config import Config

    config = Config()
    config.SwarmClusterConfig.image = FLEET_IMAGE
    config.SwarmBackend.allowed_image_prefixes = ["10.0.0.2:5000/"]
    return SwarmBackend(api_url="http://gateway:8000/api", config=config)


def test_the_configured_image_needs_no_lookup(fleet_backend):
    assert check(fleet_backend, FLEET_IMAGE) is None


@pytest.mark.parametrize("image", ["debian:bookworm", "10.0.0.2:5001/lab/x:1", "evil.example/10.0.0.2:5000/x"])
def test_an_image_outside_the_allowed_prefixes_is_refused_naming_it(fleet_backend, image):
    with pytest.raises(PublicException, match=f"^image: {image} is not allowed here; images must come from 10.0.0.2:5000/$"):
        check(fleet_backend, image)


def test_several_prefixes_are_listed_in_the_refusal():
    from traitlets.config import Config

    config = Config()
    config.SwarmBackend.allowed_image_prefixes = ["a.example/", "b.example/"]
    b = SwarmBackend(api_url="http://gateway:8000/api", config=config)
    with pytest.raises(PublicException, match="must come from a.example/ or b.example/$"):
        check(b, "c.example/x:1")


def test_an_allowed_image_is_looked_up_in_docker(fleet_backend):
    # Past the prefix check the backend asks Docker; without a client that
    # is an AttributeError, which shows the lookup was attempted.
    with pytest.raises(AttributeError):
        check(fleet_backend, "10.0.0.2:5000/lab/x:1")


@pytest.mark.parametrize(
    "image, prefix, under",
    [
        ("registry.lab/x:1", "registry.lab", True),
        ("registry.lab.evil.com/x:1", "registry.lab", False),
        ("registry.lab:5000/x:1", "registry.lab", False),
        ("10.0.0.2:5000/x", "10.0.0.2:5000", True),
        ("10.0.0.2:50000/x", "10.0.0.2:5000", False),
        ("10.0.0.2:5000/lab/x:1", "10.0.0.2:5000/lab", True),
        ("10.0.0.2:5000/laboratory/x:1", "10.0.0.2:5000/lab", False),
        ("10.0.0.2:5000/lab/x:1", "10.0.0.2:5000/lab/", True),
        ("10.0.0.2:5000/lab/dask", "10.0.0.2:5000/lab/dask", True),
        ("10.0.0.2:5000/lab/dask:2026.1", "10.0.0.2:5000/lab/dask", True),
        ("10.0.0.2:5000/lab/dask@sha256:" + "b" * 64, "10.0.0.2:5000/lab/dask", True),
        ("10.0.0.2:5000/lab/dask-evil:1", "10.0.0.2:5000/lab/dask", False),
    ],
)
def test_a_prefix_admits_images_at_reference_boundaries_only(image, prefix, under):
    assert image_is_under(image, prefix) is under


@pytest.mark.parametrize("prefix", ["", "/", "10.0.0.2:5000 /", "https://registry.lab"])
def test_a_prefix_that_names_no_registry_is_refused_at_configuration(prefix):
    with pytest.raises(TraitError, match="allowed_image_prefixes: .* is not a registry, namespace or repository"):
        SwarmBackend(api_url="http://gateway:8000/api", allowed_image_prefixes=[prefix])
