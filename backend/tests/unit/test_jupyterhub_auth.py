"""JupyterHubAuthenticator against a real JupyterHub, on real aiohttp requests."""

import sys
import types
import warnings
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp.test_utils import make_mocked_request

from dask_gateway_swarm.auth import GatewayUser, JupyterHubAuthenticator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from hubprocess import Hub  # noqa: E402

SERVICE = "dask-gateway"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("hub"), "127.0.0.1", service=SERVICE, access=["alice"], admins=["root"])
    try:
        yield hub
    finally:
        hub.stop()


async def authenticate(hub, token):
    """The user the gateway's authenticator makes of ``token``, and the backend's admins after."""
    authenticator = JupyterHubAuthenticator(
        jupyterhub_api_url=hub.api_url, jupyterhub_api_token=hub.gateway_token, jupyterhub_service_name=SERVICE
    )
    # The gateway passes its private API's aiohttp application, which holds
    # the backend; its admin_users is what the routes list clusters by.
    app = web.Application()
    with warnings.catch_warnings():
        # As the gateway does: plain string keys.
        warnings.simplefilter("ignore", NotAppKeyWarning)
        app["backend"] = types.SimpleNamespace(admin_users=set())
    await authenticator.setup(app)
    try:
        return await authenticator.authenticate(request(token)), app["backend"].admin_users
    finally:
        await authenticator.cleanup()


def request(token):
    return make_mocked_request("GET", "/api/v1/clusters/", headers={"Authorization": f"jupyterhub {token}"})


async def test_a_user_with_access_is_that_user(hub):
    user, admins = await authenticate(hub, hub.user_token("alice"))
    assert isinstance(user, GatewayUser)
    assert (user.name, user.admin) == ("alice", False)
    assert admins == set()


async def test_a_hub_admin_is_a_gateway_admin(hub):
    user, admins = await authenticate(hub, hub.user_token("root"))
    # A GatewayUser admin acts on every cluster (test_auth.py).
    assert isinstance(user, GatewayUser)
    assert (user.name, user.admin) == ("root", True)
    assert admins == {"root"}


@pytest.mark.parametrize("who", ["unknown token", "no access scope"])
async def test_refused_tokens_are_401(hub, who):
    token = "0" * 64 if who == "unknown token" else hub.user_token("carol")
    with pytest.raises(web.HTTPUnauthorized):
        await authenticate(hub, token)
