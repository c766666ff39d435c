"""gateway_auth: jupyterhub, against a real JupyterHub.

The hub runs on this machine from .venv (jupyterhub with the Python
configurable-http-proxy), its API on the fleet network's bridge address, where
the gateway's container reaches it. Users and their API tokens are made
through the hub's REST API by a service with admin scopes; nobody logs in
(the hub's null authenticator). The gateway play is rerun with
gateway_auth: jupyterhub, as an admin would, and rerun as before at the end.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from conftest import Fleet, assert_no_secret_printed, playbook

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, http_status, open_client, open_cluster, wait_for  # noqa: E402
from dask_gateway import Gateway, JupyterHubAuth  # noqa: E402

pytestmark = [pytest.mark.auth("simple"), pytest.mark.changes_deployment]

CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": "1 GiB"}
SERVICE = "dask-gateway"
USER_LABEL = "dask-gateway-swarm.user"
CLUSTER_LABEL = "dask-gateway-swarm.cluster"
BIN = Path(sys.executable).parent


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Hub:
    """A JupyterHub process and its REST API, as its admin service uses it."""

    def __init__(self, workdir: Path, ip: str) -> None:
        self.workdir = workdir
        self.hub_port = free_port(ip)
        self.api_url = f"http://{ip}:{self.hub_port}/hub/api"
        self.gateway_token = secrets.token_hex(32)
        self.admin_token = secrets.token_hex(32)
        config = {
            "hub_ip": ip,
            "hub_port": self.hub_port,
            "port": free_port("127.0.0.1"),
            "proxy_api": f"http://127.0.0.1:{free_port('127.0.0.1')}",
            "proxy": str(BIN / "configurable-http-proxy"),
            "gateway_token": self.gateway_token,
            "admin_token": self.admin_token,
            "service": SERVICE,
        }
        (workdir / "config.json").write_text(json.dumps(config))
        (workdir / "config.json").chmod(0o600)
        # Users get the gateway through a role, as a lab's hub grants it; carol
        # does not. root is a hub admin, whose role includes access:services.
        (workdir / "jupyterhub_config.py").write_text(
            "import json\n"
            "c = get_config()  # noqa: F821\n"
            "cfg = json.load(open('config.json'))\n"
            "c.JupyterHub.ip = '127.0.0.1'\n"
            "c.JupyterHub.port = cfg['port']\n"
            "c.JupyterHub.hub_ip = cfg['hub_ip']\n"
            "c.JupyterHub.hub_port = cfg['hub_port']\n"
            "c.ConfigurableHTTPProxy.api_url = cfg['proxy_api']\n"
            "c.ConfigurableHTTPProxy.command = [cfg['proxy']]\n"
            "c.JupyterHub.authenticator_class = 'null'\n"
            "c.Authenticator.admin_users = {'root'}\n"
            "c.JupyterHub.services = [\n"
            "    {'name': cfg['service'], 'api_token': cfg['gateway_token']},\n"
            "    {'name': 'harness', 'api_token': cfg['admin_token']},\n"
            "]\n"
            "c.JupyterHub.load_roles = [\n"
            "    {'name': 'harness', 'scopes': ['admin:users', 'tokens'], 'services': ['harness']},\n"
            "    {'name': 'gateway-users', 'scopes': ['access:services!service=' + cfg['service']],\n"
            "     'users': ['alice', 'bob']},\n"
            "]\n"
        )
        self.log = open(workdir / "hub.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"),
        )
        wait_for(self.answers, 60, interval=0.5, message="JupyterHub to answer")

    def answers(self) -> bool:
        assert self.proc.poll() is None, "JupyterHub exited: " + (self.workdir / "hub.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(self.api_url + "/", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            self.api_url + path, method=method, data=json.dumps(body or {}).encode(),
            headers={"Authorization": f"token {self.admin_token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def user_token(self, name: str) -> str:
        try:
            self.api("POST", f"/users/{name}")
        except urllib.error.HTTPError as exc:
            # The hub made the users its config names (roles, admins) at its start.
            if exc.code != 409:
                raise
        return self.api("POST", f"/users/{name}/tokens", {"note": "gateway test"})["token"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def hub(fleet: Fleet, tmp_path: Path):
    networks = json.loads(subprocess.check_output(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", fleet.first_manager.container], text=True))
    (network,) = networks.values()
    hub = Hub(tmp_path, network["Gateway"])
    try:
        yield hub
    finally:
        hub.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def names(gateway: Gateway) -> set[str]:
    return {c.name for c in call(gateway.list_clusters)}


def test_jupyterhub_tokens_log_users_in(pytestconfig, gateway_vars, fleet: Fleet, hub: Hub, tmp_path: Path) -> None:
    url = gateway_vars["gateway_public_url"]
    stack = gateway_vars["gateway_stack_name"]
    manager = fleet.first_manager.host
    tokens = {"alice": hub.user_token("alice"), "bob": hub.user_token("bob"),
              "carol": hub.user_token("carol"), "root": hub.user_token("root")}
    extra = tmp_path / "jupyterhub-auth.json"
    extra.write_text(json.dumps({"gateway_auth": "jupyterhub", "gateway_jupyterhub_api_url": hub.api_url,
                                 "gateway_jupyterhub_api_token": hub.gateway_token}))
    extra.chmod(0o600)
    gateways = {}
    try:
        run = playbook(pytestconfig, "-e", f"@{extra}")
        assert_no_secret_printed(run, hub.gateway_token, *tokens.values())
        api = url + "/api/v1/clusters/"
        wait_for(lambda: http_status(api, hub_token=tokens["alice"]) == 200, 120, message="alice's token to work")
        # Without the hub's access:services scope, with a bad token, or with a
        # password, nobody gets in.
        assert http_status(api, hub_token=tokens["carol"]) == 401
        assert http_status(api, hub_token=secrets.token_hex(32)) == 401
        assert http_status(api, ("alice", "any-password")) == 401

        gateways = {user: Gateway(url, auth=JupyterHubAuth(api_token=token)) for user, token in tokens.items()}
        with open_cluster(gateways["alice"], **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 1, timeout=180)
                assert call(client.submit(sum, range(100)).result) == 4950
            # The hub's user is the gateway's user, down to the Swarm labels.
            services = manager.check_output(f"docker service ls -q --filter label={CLUSTER_LABEL}={cluster.name}").split()
            owners = {manager.check_output(f"docker service inspect --format '{{{{index .Spec.Labels \"{USER_LABEL}\"}}}}' {s}")
                      for s in services}
            assert owners == {"alice"}
            assert names(gateways["alice"]) == {cluster.name}
            # Another hub user neither sees nor reaches it; a hub admin sees it.
            assert names(gateways["bob"]) == set()
            with pytest.raises(aiohttp.ClientResponseError) as refused:
                call(lambda: gateways["bob"].connect(cluster.name), timeout=60)
            assert refused.value.status == 403
            gc.collect()
            assert cluster.name in names(gateways["root"])
        inspected = manager.check_output(f"docker service inspect {stack}_gateway")
        assert hub.gateway_token not in inspected
    finally:
        for gateway in gateways.values():
            close_gateway(gateway)
        restored = playbook(pytestconfig)
    # Back to the scenario's own auth: the hub token's secret is gone too.
    assert_no_secret_printed(restored, hub.gateway_token)
    assert not manager.check_output(f"docker secret ls -q --filter name={stack}_jupyterhub_token")
