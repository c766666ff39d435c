"""The hub's side: logins with the gateway's accounts, and the proxy's HTTPS,
on real bcrypt hashes, a real JupyterHub Authenticator and a real proxy."""

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

import dask_gateway_swarm
from dask_gateway_swarm.hub import AccountsAuthenticator
from dask_gateway_swarm.hubproxy import pop_option

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
# This checkout's package, as the image holds it, for the processes the tests start.
PACKAGE_ENV = {**os.environ, "PYTHONPATH": str(Path(dask_gateway_swarm.__file__).parents[1])}


@pytest.fixture
def authenticator(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({
        name: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode() for name, pw in PASSWORDS.items()
    }))
    return AccountsAuthenticator(users_file=str(path))


async def test_an_account_logs_in_with_its_password_only(authenticator):
    assert await authenticator.authenticate(None, {"username": "alice", "password": "alice-pw"}) == "alice"
    assert await authenticator.authenticate(None, {"username": "alice", "password": "bob-pw"}) is None
    assert await authenticator.authenticate(None, {"username": "carol", "password": "alice-pw"}) is None
    assert await authenticator.authenticate(None, {"username": "", "password": ""}) is None


def test_only_accounts_and_users_the_hub_allows_are_allowed(authenticator):
    assert authenticator.check_allowed("bob")
    assert not authenticator.check_allowed("carol")
    authenticator.allowed_users = {"carol"}
    assert authenticator.check_allowed("carol")


@pytest.mark.parametrize("module", ["dask_gateway_swarm.hub", "dask_gateway_swarm.backend"])
def test_the_hub_and_the_gateway_resolve_names_anew_each_time(module):
    """Neither process may use aiodns' caching resolver, installed with JupyterHub."""
    code = (
        f"import asyncio, aiohttp, {module}\n"
        "async def main():\n"
        "    connector = aiohttp.TCPConnector()\n"
        "    print(type(connector._resolver).__name__)\n"
        "    print((await connector._resolver.resolve('localhost', 80))[0]['host'])\n"
        "    await connector.close()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=PACKAGE_ENV).stdout
    assert out.split() == ["ThreadedResolver", "127.0.0.1"], out


def test_pop_option_takes_both_spellings():
    argv = ["--port", "8000", "--ssl-cert", "/c", "--ssl-key=/k", "--api-port", "8001"]
    assert pop_option(argv, "--ssl-cert") == "/c"
    assert pop_option(argv, "--ssl-key") == "/k"
    assert pop_option(argv, "--ssl-ca") is None
    assert argv == ["--port", "8000", "--api-port", "8001"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_hub_proxy_serves_https_on_its_public_port_and_http_on_its_api(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port, api_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_swarm.hubproxy", "--ip", "127.0.0.1", "--port", str(port),
         "--api-port", str(api_port), "--ssl-cert", str(cert), "--ssl-key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=PACKAGE_ENV,
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404  # TLS worked; the proxy has no route yet
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "the proxy did not answer HTTPS within 30 s"
                time.sleep(0.2)
        # Plain HTTP gets no answer on the public port ...
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        # ... and the REST API, on loopback, speaks plain HTTP to the hub.
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/routes", timeout=5) as resp:
            assert json.load(resp) == {}
    finally:
        proc.terminate()
        proc.wait(10)
