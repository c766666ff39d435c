"""A real JupyterHub for tests of the gateway's JupyterHub authentication.

It runs from this Python environment (jupyterhub, with the Python
configurable-http-proxy) in a directory of the test's. Its API listens on the
address given, e.g. a bridge address that containers reach. Nobody logs in
(the null authenticator): users and their API tokens are made through the
REST API by a service with admin scopes, as a lab's hub would make them.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testsecret import Secret

BIN = Path(sys.executable).parent

# The hub reads its settings from config.json (0600): the tokens stay out of
# the config file's text and the command line.
CONFIG = """\
import json
c = get_config()  # noqa: F821
cfg = json.load(open("config.json"))
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = cfg["port"]
c.JupyterHub.hub_ip = cfg["hub_ip"]
c.JupyterHub.hub_port = cfg["hub_port"]
c.ConfigurableHTTPProxy.api_url = cfg["proxy_api"]
c.ConfigurableHTTPProxy.command = [cfg["proxy"]]
c.JupyterHub.authenticator_class = "null"
c.Authenticator.admin_users = set(cfg["admins"])
c.JupyterHub.services = [
    {"name": cfg["service"], "api_token": cfg["gateway_token"]},
    {"name": "harness", "api_token": cfg["admin_token"]},
]
c.JupyterHub.load_roles = [
    {"name": "harness", "scopes": ["admin:users", "tokens"], "services": ["harness"]},
    {"name": "gateway-users", "scopes": ["access:services!service=" + cfg["service"]],
     "users": cfg["access"]},
]
"""


def free_port(host):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Hub:
    """A JupyterHub process and its REST API.

    ``access`` are the users the hub grants ``access:services!service=<service>``
    (a role, as a lab's hub grants the gateway); ``admins`` are hub admins,
    whose role includes ``access:services``.
    """

    def __init__(self, workdir, ip, service="dask-gateway", access=(), admins=()):
        self.workdir = Path(workdir)
        self.hub_port = free_port(ip)
        self.api_url = f"http://{ip}:{self.hub_port}/hub/api"
        self.gateway_token = Secret(secrets.token_hex(32))
        self.admin_token = Secret(secrets.token_hex(32))
        config = {
            "hub_ip": ip,
            "hub_port": self.hub_port,
            "port": free_port("127.0.0.1"),
            "proxy_api": f"http://127.0.0.1:{free_port('127.0.0.1')}",
            "proxy": str(BIN / "configurable-http-proxy"),
            "gateway_token": self.gateway_token,
            "admin_token": self.admin_token,
            "service": service,
            "access": list(access),
            "admins": list(admins),
        }
        settings = self.workdir / "config.json"
        settings.touch(mode=0o600)
        settings.write_text(json.dumps(config))
        (self.workdir / "jupyterhub_config.py").write_text(CONFIG)
        self.log_path = self.workdir / "hub.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"),
            )
        deadline = time.monotonic() + 60
        while not self.answers():
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("JupyterHub did not answer within 60 s: " + self.log_path.read_text()[-3000:])
            time.sleep(0.5)

    def answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("JupyterHub exited: " + self.log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(self.api_url + "/", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, method, path, body=None):
        """Call the hub's REST API as the admin service; the decoded JSON."""
        req = urllib.request.Request(
            self.api_url + path, method=method, data=json.dumps(body or {}).encode(),
            headers={"Authorization": f"token {self.admin_token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def user_token(self, name):
        """A new API token of user ``name``, made first if need be."""
        try:
            self.api("POST", f"/users/{name}")
        except urllib.error.HTTPError as exc:
            # The hub made the users its config names (roles, admins) at its start.
            if exc.code != 409:
                raise
        return Secret(self.api("POST", f"/users/{name}/tokens", {"note": "gateway test"})["token"])

    def stop(self):
        """Stop the hub; it stops the proxy it started."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
