"""UsersAuthenticator and GatewayUser, on real aiohttp requests and bcrypt hashes."""

import asyncio
import base64
import json
import time

import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from dask_gateway_server.models import Cluster, ClusterStatus

from dask_gateway_swarm.auth import GatewayUser, UsersAuthenticator, load_users_file

# Cost 4: fast tests; the timing test compares costs, not absolute times.
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps(
            {
                name: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()
                for name, pw in PASSWORDS.items()
            }
        )
    )
    return path


def request(user=None, password=None, header=None):
    if header is None and user is not None:
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": header} if header is not None else {}
    return make_mocked_request("GET", "/api/v1/clusters/", headers=headers)


async def authenticator(users_file, **kwargs):
    auth = UsersAuthenticator(users_file=str(users_file), **kwargs)
    await auth.setup(None)
    return auth


async def test_good_password_returns_user_and_admin_flag(users_file):
    auth = await authenticator(users_file, admin_users={"alice"})
    alice = await auth.authenticate(request("alice", "alice-pw"))
    bob = await auth.authenticate(request("bob", "bob-pw"))
    assert (alice.name, alice.admin, bob.name, bob.admin) == ("alice", True, "bob", False)
    assert isinstance(bob, GatewayUser)


@pytest.mark.parametrize(
    "req",
    [
        request("alice", "bob-pw"),
        request("mallory", "bob-pw"),
        request("bob", ""),
        request("bob", "bob-pw" + "x" * 80),
        request(),
        request(header="Basic !!!not-base64"),
        request(header="Basic " + base64.b64encode(b"no-colon").decode()),
        request(header="Bearer abc"),
        request(header="Basic"),
    ],
)
async def test_refusals_are_401_with_a_basic_challenge(users_file, req):
    auth = await authenticator(users_file)
    with pytest.raises(web.HTTPUnauthorized) as info:
        await auth.authenticate(req)
    assert info.value.headers["WWW-Authenticate"] == "Basic"


async def test_unknown_user_costs_a_bcrypt_check(tmp_path):
    # Cost 10 (~50 ms) so the difference is measurable.
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps({"bob": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=10)).decode()})
    )
    auth = await authenticator(path)

    async def elapsed(name):
        start = time.perf_counter()
        with pytest.raises(web.HTTPUnauthorized):
            await auth.authenticate(request(name, "wrong"))
        return time.perf_counter() - start

    known, unknown = await elapsed("bob"), await elapsed("nobody")
    assert unknown > 0.5 * known


async def test_bcrypt_runs_off_the_event_loop(users_file):
    auth = await authenticator(users_file)
    auth.book.dummy_hash = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=12))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(web.HTTPUnauthorized):
            await auth.authenticate(request("nobody", "x"))
    finally:
        task.cancel()
    assert ticks >= 5


async def test_setup_logs_counts_never_hashes(users_file, caplog):
    auth = UsersAuthenticator(users_file=str(users_file), admin_users={"alice"})
    auth.log.propagate = True
    with caplog.at_level("INFO"):
        await auth.setup(None)
    assert "Loaded 2 users (1 admins)" in caplog.text
    assert "$2b$" not in caplog.text


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected a JSON object"),
        ("{nope", "not valid JSON"),
        ('{"bob": "plain-password"}', "'bob' is not a bcrypt hash"),
    ],
)
def test_bad_users_file_named_without_its_content(tmp_path, text, message):
    path = tmp_path / "users.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_users_file(path)
    assert "plain-password" not in str(info.value)


def test_gateway_user_permissions():
    cluster = Cluster(
        name="c1",
        username="bob",
        token="t",
        options={},
        config={},
        status=ClusterStatus.RUNNING,
        scheduler_address="",
        dashboard_address="",
        api_address="",
        tls_cert=b"",
        tls_key=b"",
        start_time=0,
    )
    assert GatewayUser("bob").has_permissions(cluster)
    assert not GatewayUser("carol").has_permissions(cluster)
    assert GatewayUser("alice", admin=True).has_permissions(cluster)
