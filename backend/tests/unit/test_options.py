"""Cluster options: profiles, node pools, validation messages naming the option."""

import asyncio

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.models import User

from dask_gateway_swarm import SwarmBackend, parse_memory, swarm_cluster_options

GIB = 2**30
SIZE_HINT = " (expected a size such as '512 MiB' or '8 GiB')"

PROFILES = {
    "small": {"worker_cores": 2, "worker_memory": "8 GiB"},
    "medium": {"worker_cores": 4, "worker_memory": "16 GiB"},
}


def make_backend(**kwargs):
    options = swarm_cluster_options(
        profiles=PROFILES,
        node_pools=["arm64", "x86"],
        max_worker_cores=4,
        max_worker_memory="16 GiB",
        **kwargs,
    )
    return SwarmBackend(cluster_options=options)


def process(backend, request):
    """Options to config, as upstream parses them; SwarmBackend's image lookup
    after it needs Docker (tests/unit/test_images.py, tests/integration)."""
    return asyncio.run(super(SwarmBackend, backend).process_cluster_options(User("alice"), request))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8 GiB", 8 * GIB),
        ("8G", 8 * GIB),
        ("512 MiB", 512 * 2**20),
        ("1.5 GiB", int(1.5 * GIB)),
        (1024, 1024),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "bad, message",
    [
        ("banana", "worker_memory: 'banana' is not a memory size" + SIZE_HINT),
        ("8 XB", "worker_memory: '8 XB' is not a memory size" + SIZE_HINT),
        ("", "worker_memory: '' is not a memory size" + SIZE_HINT),
        ("-1 G", "worker_memory: '-1 G' is not a memory size" + SIZE_HINT),
        (True, "worker_memory: True is not a memory size"),
        (None, "worker_memory: None is not a memory size"),
    ],
)
def test_parse_memory_refuses(bad, message):
    with pytest.raises(ValueError) as info:
        parse_memory(bad, "worker_memory")
    assert str(info.value) == message


def test_profile_small_and_medium():
    backend = make_backend()
    _, config = process(backend, {"profile": "small"})
    assert config.worker_cores == 2
    assert config.worker_memory == 8 * GIB
    assert config.worker_memory_limit == 8 * GIB
    assert config.worker_threads == 2
    _, config = process(backend, {"profile": "medium"})
    assert (config.worker_cores, config.worker_memory) == (4, 16 * GIB)


def test_custom_size_image_env_pool():
    backend = make_backend()
    _, config = process(
        backend,
        {
            "worker_cores": 1.5,
            "worker_cores_limit": 2,
            "worker_memory": "3 GiB",
            "node_pool": "arm64",
            "image": "other:2",
            "environment": {"FOO": "bar"},
        },
    )
    assert config.worker_cores == 1.5
    assert config.worker_cores_limit == 2
    assert config.worker_threads == 1
    assert config.worker_memory == 3 * GIB
    assert config.node_pool == "arm64"
    assert config.image == "other:2"
    assert config.environment == {"FOO": "bar"}


@pytest.mark.parametrize("number, expected", [(2, 2 * GIB), (0.5, GIB // 2), (16, 16 * GIB)])
def test_a_number_for_worker_memory_is_gib(number, expected):
    # DaskHub's convention, which seed users type: new_cluster(worker_memory=2).
    _, config = process(make_backend(), {"worker_memory": number})
    assert config.worker_memory == expected


def test_defaults_any_pool_keep_config_image():
    backend = make_backend()
    _, config = process(backend, {})
    assert config.node_pool == ""
    assert config.image == "dask-gateway-swarm:latest"
    assert config.worker_cores == 1
    assert config.worker_memory == 2 * GIB


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"profile": "huge"}, "'huge' is not a valid option for profile"),
        ({"worker_memory": "banana"}, "worker_memory: 'banana' is not a memory size" + SIZE_HINT),
        ({"worker_cores": 8}, "worker_cores must be <= 4.000000, got 8.0"),
        ({"worker_cores": 3, "worker_cores_limit": 2}, "worker_cores: 3 cores exceeds worker_cores_limit of 2"),
        ({"worker_memory": "64 GiB"}, "worker_memory: '64 GiB' exceeds the maximum of '16 GiB' per worker"),
        ({"node_pool": "mars"}, "'mars' is not a valid option for node_pool"),
        ({"environment": {"DASK_GATEWAY_API_TOKEN": "x"}}, "environment: DASK_GATEWAY_API_TOKEN is set by the gateway"),
        ({"environment": {"1BAD": "x"}}, "environment: '1BAD' is not a valid variable name"),
        ({"image": "has space"}, "image: 'has space' is not an image reference"),
        ({"worker_cores": "two"}, "worker_cores must be a float, got 'two'"),
        ({"workers": 3}, "Unknown fields ['workers']"),
        ({"worker_memory": 64}, "worker_memory: '64 GiB' exceeds the maximum of '16 GiB' per worker"),
        ({"worker_memory": -2}, "worker_memory: a number is GiB and must be positive, got -2"),
        ({"worker_memory": True}, "worker_memory must be a string, got True"),
    ],
)
def test_bad_options_refused_naming_the_option(request_, message):
    backend = make_backend()
    with pytest.raises(PublicException) as info:
        process(backend, request_)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"worker_cores": 16}, "worker_cores must be <= 8.000000, got 16.0"),
        ({"worker_memory": "64 GiB"}, "worker_memory: '64 GiB' exceeds the maximum of '32 GiB' per worker"),
        ({"profile": "large"}, "'large' is not a valid option for profile"),
        ({"worker_memory": "banana"}, "worker_memory: 'banana' is not a memory size" + SIZE_HINT),
        ({"node_pool": "any"}, "Unknown fields ['node_pool']"),
    ],
)
def test_readme_refusals_with_the_roles_defaults(request_, message):
    """The messages README.md quotes ("Limits, and what the client sees"),
    with the gateway role's defaults: 8 cores and 32 GiB per worker, the
    small and medium profiles, no node pools."""
    backend = SwarmBackend(
        cluster_options=swarm_cluster_options(
            profiles=PROFILES, max_worker_cores=8, max_worker_memory="32 GiB"
        )
    )
    with pytest.raises(PublicException) as info:
        process(backend, request_)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"profiles": {"big": {"worker_cores": 64}}, "max_worker_cores": 4},
         "worker_cores: 64 cores exceeds the maximum of 4 cores per worker"),
        ({"profiles": {"small": {"worker_cores": 2, "worker_memroy": "8 GiB"}}},
         "profile small: unknown key(s) worker_memroy "
         "(expected worker_cores, worker_cores_limit, worker_memory, worker_memory_limit)"),
        ({"default_worker_cores": 8, "max_worker_cores": 4},
         "worker_cores: 8 cores exceeds the maximum of 4 cores per worker"),
        ({"default_worker_memory": "64 GiB", "max_worker_memory": "32 GiB"},
         "worker_memory: '64 GiB' exceeds the maximum of '32 GiB' per worker"),
    ],
    ids=["profile-above-max", "profile-key-mistyped", "default-cores-above-max", "default-memory-above-max"],
)
def test_bad_sizes_fail_at_configuration_time(kwargs, message):
    with pytest.raises(ValueError) as info:
        swarm_cluster_options(**kwargs)
    assert str(info.value) == message


def test_no_pool_field_without_pools():
    options = swarm_cluster_options()
    assert "node_pool" not in {f.field for f in options.fields}


@pytest.mark.parametrize(
    "name",
    [
        "DASK_GATEWAY_API_TOKEN",
        "DASK_distributed__comm__require_encryption",
        "DASK_Distributed__Comm__TLS__CA_FILE",
        "DASK_Gateway__address",
        "DASK_gateway_api_token",
        "DASK_GATEWAY",
        "DASK_DISTRIBUTED",  # a literal dict sets the whole section, comm included
        "DASK_distributed__COMM",
        "DASK_INTERNAL_INHERIT_CONFIG",
        "DASK_Internal_Inherit_Config",
        "DASK_CONFIG",
        "dask_gateway__address",
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD",
        "DASK_distributed__scheduler__PRELOAD_ARGV",
        "DASK_DISTRIBUTED__SCHEDULER",  # a literal dict sets the preloads too
    ],
)
def test_environment_names_dask_reads_as_gateway_config_refused(name):
    backend = make_backend()
    with pytest.raises(PublicException) as info:
        process(backend, {"environment": {name: "x"}})
    assert str(info.value) == f"environment: {name} is set by the gateway"


@pytest.mark.parametrize(
    "name",
    [
        "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET",
        "DASK_array__chunk_size",
        "DASK_GATEWAYS",
        "MY_DASK_GATEWAY_X",
    ],
)
def test_other_dask_config_in_environment_allowed(name):
    backend = make_backend()
    _, config = process(backend, {"environment": {name: "1"}})
    assert config.environment == {name: "1"}
