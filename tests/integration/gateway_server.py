"""A real dask-gateway-server (local-process backend) on 127.0.0.1, for tests.

It runs from this Python environment with SimpleAuthenticator and a
generated password, on a free port, in a working directory of the test's.
"""

import json
import secrets
import sys
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

# The backend's own local-gateway helpers (backend/tests/local).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tests" / "local"))
from localgateway import free_port, launch_server, stop_process_group, wait_until_healthy  # noqa: E402

BIN = Path(sys.executable).parent
SERVER = BIN / "dask-gateway-server"
DASK = BIN / "dask"

CONFIG = """
from dask_gateway_server.options import Options, Integer, Select

c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.Proxy.address = "127.0.0.1:{port}"
c.UnsafeLocalBackend.clusters_directory = {clusters!r}
# distributed no longer ships dask-scheduler / dask-worker scripts
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.worker_memory = 0.25
c.ClusterConfig.scheduler_memory = 0.25

def options_handler(options):
    return {{"worker_cores": options.worker_cores}}

c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=2, label="Worker cores"),
    Select("profile", ["small", "medium"], default="small", label="Worker size"),
    handler=options_handler,
)
"""


class Server:
    def __init__(self, address, password, log):
        self.address = address
        self.password = password
        self.log = log

    def api(self, path, password=None):
        """GET the gateway's REST API with basic auth; returns the decoded JSON."""
        auth = b64encode(("tester:%s" % (password or self.password)).encode()).decode()
        request = urllib.request.Request(self.address + path, headers={"Authorization": "Basic " + auth})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read().decode())

    def clusters(self):
        return self.api("/api/v1/clusters/")


def self_signed_cert(directory):
    """A certificate for 127.0.0.1 (and its key), signed by itself: it is also the CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def start_server(workdir, tls=False):
    """Start dask-gateway-server in ``workdir``; return (process, Server)."""
    password = secrets.token_urlsafe(24)
    port = free_port()
    text = CONFIG.format(password=password, port=port, clusters=str(workdir / "clusters"), dask=str(DASK))
    context = None
    if tls:
        cert_file, key_file = self_signed_cert(workdir)
        text += "\nc.Proxy.tls_cert = %r\nc.Proxy.tls_key = %r\n" % (str(cert_file), str(key_file))
        import ssl

        context = ssl.create_default_context(cafile=str(cert_file))
    log = workdir / "server.log"
    proc = launch_server(workdir, text, log)
    address = "%s://127.0.0.1:%d" % ("https" if tls else "http", port)
    srv = Server(address, password, log)
    srv.ca_file = str(workdir / "tls.crt") if tls else None
    if not wait_until_healthy(address, proc, context=context):
        stop_server(proc)
        pytest.fail("dask-gateway-server did not start:\n" + log.read_text(errors="replace")[-3000:])
    return proc, srv


def stop_server(proc):
    stop_process_group(proc, timeout=20)
